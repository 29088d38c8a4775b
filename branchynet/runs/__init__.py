"""The paper's runs: a run's configuration and command line, its steps,
its folder, its reports, tables and figures, relays across sittings, and
the elastic and preprocessing studies."""
from branchynet.runs.config import RunConfig  # noqa
