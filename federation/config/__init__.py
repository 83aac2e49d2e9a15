"""node.toml and job.toml -> validated dataclasses.

Every error is a :class:`ConfigError` whose message names the file, the dotted key and
what was expected, with the closest valid key when a key looks like a typo::

    node.toml: [policy] unknown key 'min_key_bit'; did you mean 'min_key_bits'?
    job.toml: job.algorithm = 'xgb': expected one of 'psi', 'score', 'secureboost', ...

* :mod:`~federation.config.toml` - loading and the validating table helper
* :mod:`~federation.config.node` - node.toml (datasets, peer, keys, policy, channel)
* :mod:`~federation.config.job` - job.toml; algorithm names and params come from
  :mod:`parties.registry`, parsed once into ``JobSpec.parsed``
"""

from federation.config.job import (
    CIPHERS,
    JOB_TYPES,
    EvaluationConfig,
    JobSpec,
    algorithm_names,
    job_spec_from_dict,
    load_job_spec,
    parse_psi_params,
    trained_algorithm_names,
    validate_psi_params,
)
from federation.config.node import (
    DEFAULT_ALLOWED,
    ChannelConfig,
    DatasetConfig,
    KeysConfig,
    NodeConfig,
    PeerConfig,
    PolicyConfig,
    key_policy,
    load_node_config,
    node_config_from_dict,
)
from federation.config.toml import PARTIES, ConfigError, parse_address, tomllib

__all__ = [
    "CIPHERS", "DEFAULT_ALLOWED", "JOB_TYPES", "PARTIES", "ChannelConfig", "ConfigError",
    "DatasetConfig", "EvaluationConfig", "JobSpec", "KeysConfig", "NodeConfig", "PeerConfig",
    "PolicyConfig", "algorithm_names", "job_spec_from_dict", "key_policy", "load_job_spec",
    "load_node_config", "node_config_from_dict", "parse_address", "parse_psi_params",
    "tomllib", "trained_algorithm_names", "validate_psi_params",
]
