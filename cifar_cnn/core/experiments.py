"""The experiment catalog: every `conf/experiment/**/*.yaml` is a row the report knows.

An experiment is named by its path under `conf/experiment/` without `.yaml` (`batchnorm`,
`beyond/flip`); its parent is the one experiment in its `defaults` list, resolved by Hydra's
rules (a bare name is taken in the experiment group, as `/experiment/...` is, whatever the
file's folder), or the base config
`default` when it names none; its description is its header comment; its section is its
folder (the top level is the study). Published numbers stay in core/published.py and are
optional: an experiment without one is a row like any other.

Plain YAML (pyyaml): free of torch, Lightning and Hydra, so that the report can read it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from cifar_cnn.core.errors import UserError

# A wheel ships conf/ inside the package; a source checkout keeps it at the top level.
_PACKAGED = Path(__file__).resolve().parents[1] / "conf"
CONFIG_DIR = _PACKAGED if _PACKAGED.is_dir() else _PACKAGED.parents[1] / "conf"
EXPERIMENT_GROUP = "experiment"
BASE = "default"  # the experiment that is the base config itself (conf/experiment/default.yaml)
STUDY = ""  # the section of the top-level experiments
SECTION_TITLES = {STUDY: "the study", "beyond": "Beyond the study"}


class ExperimentError(UserError):
    """An experiment file whose parent cannot be read."""


@dataclass(frozen=True)
class Experiment:
    """One experiment file."""

    name: str  # its path under conf/experiment without .yaml: `batchnorm`, `beyond/flip`
    parent: str | None  # the experiment it changes; None for the base config
    description: str  # its header comment, `# @package` lines left out
    path: Path

    @property
    def section(self) -> str:
        return section_of(self.name)


def section_of(name: str | None) -> str:
    """The section (family) of an experiment: its folder, `""` (the study) at the top level."""
    return (name or "").rpartition("/")[0]


def section_title(section: str) -> str:
    """`""` -> "the study", `beyond` -> "Beyond the study", `my_rows` -> "My rows"."""
    if section in SECTION_TITLES:
        return SECTION_TITLES[section]
    text = section.replace("_", " ").replace("/", " / ")
    return text[:1].upper() + text[1:]


def description(text: str) -> str:
    """The header comment of a YAML file: its leading `#` lines, `# @package` left out."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        line = line.lstrip("#").strip()
        if line and not line.startswith("@package"):
            lines.append(line)
    return " ".join(lines)


def _resolve(entry: object, group: str) -> str | None:
    """The config path a defaults entry selects, when it is an experiment; else None.

    `name` and `{group: name}` entries are relative to the group the file is chosen from
    (`experiment`, also for a file in a folder of it: Hydra resolves `- base` in
    experiment/beyond/flip.yaml as experiment/base) unless they start with `/`;
    `override `/`optional ` prefixes and `@package` suffixes are Hydra's.
    """
    if isinstance(entry, str):
        if entry == "_self_":
            return None
        path = entry[1:] if entry.startswith("/") else f"{group}/{entry}"
    elif isinstance(entry, dict) and len(entry) == 1:
        ((key, value),) = entry.items()
        key = str(key).split("@")[0].split()[-1]
        if not isinstance(value, str):
            return None  # null, or a list of several options: not one parent
        key_group = key[1:] if key.startswith("/") else f"{group}/{key}"
        path = f"{key_group}/{value}"
    else:
        return None
    prefix = EXPERIMENT_GROUP + "/"
    return path.removeprefix(prefix) if path.startswith(prefix) else None


def read_experiment(path: Path, name: str) -> Experiment:
    """One experiment file; its parent as its defaults name it (None when they name none),
    not yet checked against the catalog."""
    text = path.read_text()
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ExperimentError(f"{path}: not valid YAML ({e})") from e
    defaults = config.get("defaults", []) if isinstance(config, dict) else []
    if not isinstance(defaults, list):
        raise ExperimentError(f"{path}: `defaults` must be a list")
    parents = [p for p in (_resolve(entry, EXPERIMENT_GROUP) for entry in defaults) if p]
    if len(parents) > 1:
        raise ExperimentError(
            f"{path}: its defaults name {len(parents)} experiments ({', '.join(parents)}); a "
            "row changes one parent: keep one and write the other's changes into this file"
        )
    return Experiment(name, parents[0] if parents else None, description(text), path)


def read_catalog(config_dirs: Iterable[Path] = (CONFIG_DIR,)) -> dict[str, Experiment]:
    """Every experiment of the config directories, name -> Experiment, sorted by name.

    As in Hydra's search path, a name found in an earlier directory hides a later one. A
    parent that is no experiment is an error naming the file.
    """
    found: dict[str, Experiment] = {}
    for config_dir in config_dirs:
        root = Path(config_dir) / EXPERIMENT_GROUP
        for path in sorted(root.rglob("*.yaml")) if root.is_dir() else []:
            name = path.relative_to(root).with_suffix("").as_posix()
            if name not in found:
                found[name] = read_experiment(path, name)
    catalog = {
        # An experiment that names no parent changes the base config, which `default` is.
        name: replace(e, parent=BASE) if not e.parent and BASE in found and name != BASE else e
        for name, e in sorted(found.items())
    }
    for experiment in catalog.values():
        if experiment.parent and experiment.parent not in catalog:
            raise ExperimentError(
                f"{experiment.path}: its parent {experiment.parent!r} is no experiment file "
                f"(conf/experiment/{experiment.parent}.yaml); a name in `defaults` is taken "
                "from the top of conf/experiment/ (/experiment/beyond/NAME for a file in beyond/)"
            )
    return catalog
