# fedjoint — see README.md.  `make test` and `make demo` work from a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo bench proto lint clean fuzz

$(STAMP): pyproject.toml setup.py $(wildcard psi/native/*.c psi/native/*.h)  # the C extension is rebuilt when its sources change
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,native,horizontal]'
	touch $(STAMP)

install: $(STAMP)

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. federation/channel/fedjoint.proto

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

fuzz: $(STAMP)  # the decoder fuzzers at 5000 examples each (docs/fuzzing.md)
	HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -q tests/federation/test_fuzz_decoders.py tests/federation/test_fuzz_resume.py tests/psi/test_fuzz_points.py tests/secure_agg/test_fuzz_ciphertexts.py

demo: $(STAMP)
	$(BIN)/fedjoint demo

bench: $(STAMP)
	mkdir -p bench/results
	$(BIN)/python bench/paillier.py --quick --json bench/results/paillier.json
	$(BIN)/python bench/channel.py --quick --json bench/results/channel.json
	$(BIN)/python bench/psi.py --quick --json bench/results/psi.json
	$(BIN)/python bench/lr.py --quick --json bench/results/lr.json
	$(BIN)/python bench/secureboost.py --quick --json bench/results/secureboost.json
	$(BIN)/python bench/ou.py --quick --json bench/results/ou.json
	$(BIN)/python bench/horizontal.py --quick --json bench/results/horizontal.json
	$(BIN)/python bench/secagg.py --quick --json bench/results/secagg.json

clean:
	rm -rf $(VENV) build *.egg-info
