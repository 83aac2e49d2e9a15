"""The chunked dataset reader (federation.data_source): the same rows, order, values,
missing cells, categories, ids and errors as the whole-table pandas reader, on the
bundled datasets and on a file of edge cases; Parquet and DuckDB sources through two
real nodes; the memory budget's errors; and a memory bound on a generated file."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.nodes import running_nodes, wait_state, write_job, write_node_tomls

from federation.config import DatasetConfig, node_config_from_dict
from federation.config.toml import ConfigError
from federation.data import DataError, _read, load_dataset

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
BUNDLED = sorted(DATA.glob("*.csv")) + sorted((ROOT / "examples").rglob("*.csv"))


def _ds(path, **kw) -> DatasetConfig:
    return DatasetConfig(name="d", path=Path(path), id_column=kw.pop("id_column", "id"), **kw)


def _whole(ds: DatasetConfig, **kw):
    """The whole-table reader: pandas reads every cell as text, then the same checks."""
    return load_dataset(replace(ds, frame=_read(Path(ds.path))), **kw)


def _same(a, b) -> None:
    assert a.ids == b.ids and a.feature_names == b.feature_names
    assert a.X.dtype == b.X.dtype == np.float64 and a.X.shape == b.X.shape
    assert np.array_equal(a.X, b.X, equal_nan=True)
    assert (a.y is None) == (b.y is None)
    if a.y is not None:
        assert a.y.dtype == b.y.dtype and np.array_equal(a.y, b.y)
    assert a.categories == b.categories and a.unseen == b.unseen and a.classes == b.classes


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_bundled_datasets_equal_the_whole_table_reader(path):
    header = pd.read_csv(path, nrows=0).columns
    label = "y" if "y" in header else None
    ds = _ds(path, label_column=label)
    got = load_dataset(ds, chunk_rows=97)           # many chunks, one partial
    _same(got, _whole(ds))
    # and pandas' own float parser (no fedjoint code) on the same file
    ref = pd.read_csv(path)
    assert got.ids == [str(v) for v in ref["id"]]
    assert np.array_equal(got.X, ref[got.feature_names].to_numpy(np.float64), equal_nan=True)


EDGE = (
    'id,y,"a,b",cat,c\n'
    '007,1,"1.5",x,3\n'
    '"8",0,,"y, z",1e5\n'
    '  9 ,1,NA,"he said ""hi""",-0\n'
    '12345678901234567890,0,nan,,+4\n'
    'A-1,1,NaN,x," 2.5 "\n'
    'b,0,-NaN,"multi\nline",.5\n'
    'c,1,null,y,NULL\n'
    'd,0,None,<NA>,none\n'
    'e,1, null ,x,1.\n'
    'f,0,<NA>,y,-1.25e-3\n'
    'g,1,"",x,0012\n'
)


@pytest.mark.parametrize("chunk", [1, 2, 5, 1000])
def test_edge_cases_equal_the_whole_table_reader(tmp_path, chunk):
    p = tmp_path / "edge.csv"
    p.write_text(EDGE)
    ds = _ds(p, label_column="y", categorical=["cat"])
    got = load_dataset(ds, chunk_rows=chunk)
    _same(got, _whole(ds))
    assert got.ids[:5] == ["007", "8", "9", "12345678901234567890", "A-1"]
    assert got.feature_names == ["a,b", "cat", "c"]
    assert np.isnan(got.X[:, 0]).sum() == 10 and got.X[0, 0] == 1.5
    assert got.X[:, 2].tolist()[:6] == [3.0, 1e5, -0.0, 4.0, 2.5, 0.5]
    assert got.categories["cat"] == sorted(["x", "y, z", 'he said "hi"', "multi\nline", "y"])


BAD = [
    "id,a,b\n1,2,x\n2,3,4\n",                       # non-numeric
    "id,a,b\n1,2,3\n2,,n/a\n3,1,SECRET\n",           # non-numeric, counted over the file
    "id,a\n1,2\n2,inf\n3,1\n4,-Infinity\n",          # infinite
    "id,a,b\n1,2,+nan\n2,3,4\n",                     # a NaN spelling the tokens lack
    "id,a\n1,2\n1,3\n",                              # duplicate id
    "id,a\n1,2\n,3\n",                               # empty id
    "id,a,b\n1,2,3\n2,4\n3,5,6\n",                   # short row: pandas pads it
    "id,a,b\n1,2,3\n2,4,5,6\n",                      # long row: pandas names the line
    "id,a\n1,\xff\n",                                # not UTF-8
    "id,y,a\n1,0,1\n2,,2\n",                         # blank label
    "id,a,a\n1,2,3\n2,3,4\n",                        # duplicate header: a, a.1 as pandas
]


@pytest.mark.parametrize("text", BAD, ids=range(len(BAD)))
def test_bad_files_give_the_whole_table_errors(tmp_path, text):
    p = tmp_path / "bad.csv"
    p.write_bytes(text.encode("latin-1"))
    ds = _ds(p, label_column="y" if ",y," in text else None)
    try:
        want = _whole(ds)
    except DataError as exc:
        with pytest.raises(DataError) as ei:
            load_dataset(ds, chunk_rows=1)
        assert str(ei.value) == str(exc) and str(p) in str(exc)
        assert "SECRET" not in str(exc)
    else:
        _same(load_dataset(ds, chunk_rows=1), want)


def test_parquet_and_duckdb_sources_equal_the_csv(tmp_path):
    import duckdb
    src = DATA / "default_credit_hetero_host.csv"
    df = pd.read_csv(src)
    df.to_parquet(tmp_path / "d.parquet", row_group_size=7000)
    with duckdb.connect(str(tmp_path / "d.duckdb")) as con:
        con.execute("create table t as select * from df")
    want = load_dataset(_ds(src))
    _same(load_dataset(_ds(tmp_path / "d.parquet"), chunk_rows=4096), want)
    q = _ds(tmp_path / "d.duckdb", query="select * from t")
    _same(load_dataset(q, chunk_rows=4096), want)
    sub = load_dataset(replace(q, query="select id, x3, x1 from t where id % 2 = 0"))
    assert sub.feature_names == ["x3", "x1"]
    assert sub.ids == [str(i) for i in df["id"] if i % 2 == 0]


def test_the_whole_file_reader_still_reads_parquet_and_names_bad_paths(tmp_path):
    """data._read (the Python API's and reports' reader of a path, and the CSV
    fallback): Parquet as pandas reads it; a missing file or a folder named."""
    df = pd.read_csv(DATA / "breast_hetero_host.csv")
    df.to_parquet(tmp_path / "d.parquet")
    pd.testing.assert_frame_equal(_read(tmp_path / "d.parquet"), df)
    with pytest.raises(DataError, match=r"nope\.csv: dataset file not found"):
        _read(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"is a directory, expected a CSV or Parquet file"):
        _read(tmp_path)


def test_dataset_keys_are_checked(tmp_path):
    def cfg(ds: dict):
        raw = {"node": {"party": "platform", "name": "p", "listen": "127.0.0.1:0",
                        "data_dir": "d"},
               "keys": {"tls_key": "k", "tls_cert": "c", "signing_key": "s"},
               "peer": {"name": "b", "address": "127.0.0.1:1",
                        "cert_fingerprint": "00" * 32, "signing_public_key": "00" * 32,
                        "cert": "c"},
               "datasets": {"d": ds}}
        return node_config_from_dict(raw, "node.toml", base=tmp_path)
    ok = cfg({"path": "w.duckdb", "query": "select * from t"}).datasets["d"]
    assert ok.query == "select * from t" and ok.format is None
    with pytest.raises(ConfigError, match=r"datasets\.d\.query is required for a DuckDB"):
        cfg({"path": "w.db", "format": "duckdb"})
    with pytest.raises(ConfigError, match=r"datasets\.d\.query applies to DuckDB"):
        cfg({"path": "a.csv", "query": "select 1"})
    with pytest.raises(ConfigError, match=r"datasets\.d\.format = .xlsx."):
        cfg({"path": "a.xlsx", "format": "xlsx"})


def test_memory_budget_names_the_key_to_change(tmp_path):
    p = tmp_path / "d.csv"
    pd.DataFrame({"id": [f"e{i}" for i in range(20000)],
                  **{f"f{j}": np.arange(20000.0) for j in range(20)}}).to_csv(p, index=False)
    # the matrix alone (20000 x 20 float64 + ids: ~5 MB) does not fit 2 MB
    with pytest.raises(DataError, match=r"d\.csv: dataset 'd' needs ~\d+ MB in memory .*"
                       r"more than limits\.memory_budget_mb = 2; raise limits\."
                       r"memory_budget_mb"):
        load_dataset(_ds(p), memory_budget_mb=2)
    # the matrix fits 8 MB, a 200,000-row read chunk does not: the chunk size to use
    with pytest.raises(DataError, match=r"read chunk of limits\.read_chunk_rows = 200000 "
                       r"rows, more than limits\.memory_budget_mb = 8; set limits\."
                       r"read_chunk_rows = (\d+) \(or fewer\)") as ei:
        load_dataset(_ds(p), memory_budget_mb=8, chunk_rows=200_000)
    fit = int(str(ei.value).split("read_chunk_rows = ")[2].split()[0])
    assert len(load_dataset(_ds(p), memory_budget_mb=8, chunk_rows=fit)) == 20000


def test_a_job_over_the_budget_fails_at_load_before_any_message(tmp_path):
    """The platform's node with memory_budget_mb = 1: its side of a job fails at load,
    naming the chunk size that fits, and nothing has crossed to the bank."""
    from federation.config import job_spec_from_dict
    from federation.link import local_link_pair
    from federation.runner import JobFailed, run_job_side
    raw = {"node": {"party": "platform", "name": "p", "listen": "127.0.0.1:0",
                    "data_dir": str(tmp_path / "p")},
           "keys": {"tls_key": "k", "tls_cert": "c", "signing_key": "s"},
           "peer": {"name": "b", "address": "127.0.0.1:1", "cert_fingerprint": "00" * 32,
                    "signing_public_key": "00" * 32, "cert": "c"},
           "datasets": {"d": {"path": str(DATA / "breast_hetero_host.csv")}},
           "limits": {"memory_budget_mb": 1}}
    node = node_config_from_dict(raw, "platform.toml", base=tmp_path)
    spec = job_spec_from_dict({"job": {"name": "j", "algorithm": "psi", "dataset": "d",
                                       "peer_dataset": "d"}}, "job.toml")
    _, link, crossed = local_link_pair("j")
    with pytest.raises((DataError, JobFailed), match=r"breast_hetero_host\.csv: "
                       r"dataset 'd' needs .* limits\.memory_budget_mb = 1; .*set limits\."
                       r"read_chunk_rows = \d+ \(or fewer\)"):
        run_job_side(spec, node, link, b"\0" * 32)
    assert crossed == []


BOUND = r"""
import json, sys, tracemalloc
from pathlib import Path
import pyarrow as pa
from federation.config import DatasetConfig
from federation.data import load_dataset
tracemalloc.start()
d = load_dataset(DatasetConfig("d", Path(sys.argv[1]), "id"), chunk_rows=4096)
print(json.dumps({"py_peak": tracemalloc.get_traced_memory()[1], "x": d.X.nbytes,
                  "ids": sum(sys.getsizeof(i) + 8 for i in d.ids),
                  "arrow_peak": pa.default_memory_pool().max_memory()}))
"""


def test_reader_memory_is_bounded(tmp_path):
    """120,000 rows x 25 columns (3 M cells): the Python heap peaks at
    the float64 matrix twice (blocks + result) plus the ids, not at a Python object per
    cell (~60 bytes each: ~180 MB); Arrow holds one chunk at a time."""
    rng = np.random.default_rng(3)
    rows, cols = 120_000, 25
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    import pyarrow as pa
    import pyarrow.csv as pcsv
    table = pa.table({"id": np.char.add("E", np.arange(rows).astype(str)),
                      **{f"f{j}": x[:, j] for j in range(cols)}})
    p = tmp_path / "big.csv"
    pcsv.write_csv(table, p)
    out = subprocess.run([sys.executable, "-c", BOUND, str(p)], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    m = json.loads(out.stdout)
    print("reader peaks (MB): python", m["py_peak"] >> 20, "arrow", m["arrow_peak"] >> 20,
          "matrix", m["x"] >> 20, "ids", m["ids"] >> 20, "file", p.stat().st_size >> 20)
    assert m["py_peak"] < 2.2 * m["x"] + 1.5 * m["ids"] + (8 << 20)
    assert m["arrow_peak"] < 64 << 20


def test_parquet_and_duckdb_datasets_through_two_nodes(tmp_path):
    """The bank's dataset a Parquet file, the platform's a DuckDB query that keeps
    even ids only: the job's intersection is the plain set intersection of the two."""
    import duckdb

    from federation.admin import AdminClient
    from federation.config import load_job_spec
    bank_toml, plat_toml = write_node_tomls(tmp_path)
    bank = pd.read_csv(tmp_path / "bank.csv")
    bank.to_parquet(tmp_path / "bank.parquet")
    plat = pd.read_csv(tmp_path / "platform.csv")
    with duckdb.connect(str(tmp_path / "platform.duckdb")) as con:
        con.execute("create table enterprises as select * from plat")
    bank_toml.write_text(bank_toml.read_text().replace("bank.csv", "bank.parquet"))
    query = 'query = "select * from enterprises where id % 2 = 0 order by id"'
    text = plat_toml.read_text().replace("platform.csv", "platform.duckdb")
    plat_toml.write_text(text.replace('id_column = "id"', f'id_column = "id"\n{query}'))
    with running_nodes(bank_toml, plat_toml) as nodes:
        client = AdminClient(nodes[0].data_dir)
        job = write_job(tmp_path, "lr", params={"epochs": 3, "batch_size": 0})
        job_id = client.call("submit", spec=load_job_spec(job).to_dict(),
                             source=str(job))["job_id"]
        rec = wait_state(client, job_id, timeout=120)
        assert rec["state"] == "done", rec["error"]
        want = set(bank["id"]) & {i for i in plat["id"] if i % 2 == 0}
        assert rec["metrics"]["intersection"] == len(want) > 100
        assert rec["metrics"]["test_auc"] > 0.9
