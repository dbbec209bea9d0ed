"""Label overrides (known label errors): gender flips, age changes, incorrect<->normal swaps, applied at scan time."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import yaml

from maskclf.layout import DataError, Record
from maskclf.labels import GENDER_BY_NAME, AgeBounds

ACTIONS = ("gender", "age", "swap_incorrect_normal")
KEYS = ACTIONS + ("only_if_all_races",)


@dataclass
class LabelFixes:
    """Per-person corrections: new gender, new age, swapped mask images."""

    gender: dict[str, int] = field(default_factory=dict)  # person id -> new gender (0/1)
    age: dict[str, int] = field(default_factory=dict)  # person id -> new age in years
    swap_incorrect_normal: set[str] = field(default_factory=set)  # person ids whose two photos are swapped
    # Guard for fixes written for one specific dataset: apply only if every person's race is in this set.
    # The competition's ids (000001...) recur in other folders in the same layout, where they are other people.
    only_if_all_races: set[str] = field(default_factory=set)
    source: str = ""

    def __len__(self) -> int:
        return len(self.gender) + len(self.age) + len(self.swap_incorrect_normal)


def _gender(value, where: str) -> int:
    g = {"0": 0, "1": 1, **GENDER_BY_NAME}.get(str(value).strip().lower())
    if g is None:
        raise DataError(f"{where}: gender '{value}' must be male/female (or 0/1)")
    return g


def _age(value, where: str) -> int:
    try:
        age = int(str(value).strip())
    except ValueError:
        raise DataError(f"{where}: age '{value}' is not a whole number of years") from None
    if not 0 < age < 130:
        raise DataError(f"{where}: age {age} is out of range (1-129)")
    return age


def _section(tree: dict, key: str, kind: type, path: Path):
    """tree[key] checked to be a mapping/list (empty if absent)."""
    value = tree.get(key) or kind()
    if not isinstance(value, kind):
        shape = "a mapping of person id -> value" if kind is dict else "a list"
        raise DataError(f"{path}: '{key}' must be {shape}, found {value!r}")
    return value


def _from_yaml(path: Path) -> LabelFixes:
    # BaseLoader keeps every scalar a string: an unquoted id like 000225 would otherwise become the octal int 149.
    try:
        tree = yaml.load(path.read_text(), Loader=yaml.BaseLoader) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(tree, dict):
        raise DataError(f"{path}: expected a mapping with keys {list(KEYS)}")
    unknown = sorted(set(tree) - set(KEYS))
    if unknown:
        raise DataError(f"{path}: unknown key(s) {unknown}; valid keys are {list(KEYS)}")
    fixes = LabelFixes(source=str(path))
    for pid, g in _section(tree, "gender", dict, path).items():
        fixes.gender[pid] = _gender(g, f"{path}: gender.{pid}")
    for pid, a in _section(tree, "age", dict, path).items():
        fixes.age[pid] = _age(a, f"{path}: age.{pid}")
    fixes.swap_incorrect_normal = set(map(str, _section(tree, "swap_incorrect_normal", list, path)))
    fixes.only_if_all_races = {str(r).lower() for r in _section(tree, "only_if_all_races", list, path)}
    return fixes


def _from_csv(path: Path) -> LabelFixes:
    """CSV rows: id,action,value with action in gender/age/swap_incorrect_normal."""
    fixes = LabelFixes(source=str(path))
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in reader.fieldnames or []]
        if not {"id", "action"} <= set(cols):
            raise DataError(f"{path}: expected columns id,action,value; found {cols}")
        for i, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v if isinstance(v, str) else "").strip() for k, v in row.items()}
            where, pid, action = f"{path}:{i}", row["id"], row["action"]
            if not pid:
                raise DataError(f"{where}: empty id")
            if action == "gender":
                fixes.gender[pid] = _gender(row.get("value", ""), where)
            elif action == "age":
                fixes.age[pid] = _age(row.get("value", ""), where)
            elif action == "swap_incorrect_normal":
                fixes.swap_incorrect_normal.add(pid)
            else:
                raise DataError(f"{where}: action '{action}' is not one of {list(ACTIONS)}")
    return fixes


def load_fixes(spec: str | Path) -> LabelFixes:
    """'competition' (bundled), 'none', or a path to a YAML or CSV overrides file."""
    if str(spec) == "none":
        return LabelFixes(source="none")
    if str(spec) == "competition":
        ref = resources.files("maskclf") / "resources" / "label_fixes_competition.yaml"
        with resources.as_file(ref) as p:
            fixes = _from_yaml(Path(p))
        fixes.source = "competition (bundled)"
        return fixes
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"label overrides file not found: {path} (or use 'competition' / 'none')")
    return _from_csv(path) if path.suffix.lower() == ".csv" else _from_yaml(path)


def applies(fixes: LabelFixes, records: list[Record]) -> tuple[bool, str]:
    """Whether the fixes' dataset guard holds for these records, and why not."""
    if not fixes.only_if_all_races:
        return True, ""
    races = {r.race.lower() for r in records}
    if races <= fixes.only_if_all_races:
        return True, ""
    other = sorted(races - fixes.only_if_all_races)
    return False, f"{fixes.source} not applied: written for a dataset whose races are all {sorted(fixes.only_if_all_races)}, found {other}"


def apply_fixes(records: list[Record], fixes: LabelFixes, bounds: AgeBounds) -> tuple[list[Record], dict[str, int]]:
    """Return corrected records and how many people each kind of fix touched (ids absent from the data are ignored)."""
    touched = {a: set() for a in ACTIONS}
    if not applies(fixes, records)[0]:
        return list(records), {k: 0 for k in touched}
    out = []
    for r in records:
        if r.person in fixes.gender and fixes.gender[r.person] != r.gender:
            r = replace(r, gender=fixes.gender[r.person])
            touched["gender"].add(r.person)
        if r.person in fixes.age and fixes.age[r.person] != r.age:
            age = fixes.age[r.person]
            r = replace(r, age=age, age_group=bounds.group(age))
            touched["age"].add(r.person)
        if r.person in fixes.swap_incorrect_normal and r.mask in (1, 2):
            r = replace(r, mask=3 - r.mask)
            touched["swap_incorrect_normal"].add(r.person)
        out.append(r)
    return out, {k: len(v) for k, v in touched.items()}
