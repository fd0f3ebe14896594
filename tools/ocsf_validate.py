#!/usr/bin/env python3
"""Validates OCSF 1.5.0 events, one JSON object per line (file or stdin).

Each event goes through the PyPI package ocsf-emitter 0.3.0 (its pydantic
models of the 1.5.0 base classes and its invariant checks: class and
category identity, type_uid = class_uid * 100 + activity_id, schema
version). Those models accept unknown attributes, so this script also
checks that every attribute emitted is one the schema defines, recursively;
the only additions accepted are the `host` profile's `actor` and `device`
when `metadata.profiles` declares it (the models leave profiles out).

Prints one line per event, `ok <class>` or `FAIL <line>: <why>`, and exits
1 when any event fails. Installed by `cargo xtask setup --test-tools` into
target/tools/ocsf-venv.
"""

import json
import sys
import types
import typing

from ocsf_emitter import _models as models
from ocsf_emitter import defaults
from ocsf_emitter import validate
from ocsf_emitter.errors import InvalidFindingError
from pydantic import BaseModel

PROFILE_ATTRS = {"host": {"actor": models.Actor, "device": models.Device}}


def model_in(annotation):
    """The pydantic model an annotation holds (through Optional, list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found = model_in(arg)
            if found is not None:
                return found
    return None


def unknown_attrs(value, model, path, extra=None):
    """Attributes of `value` that `model` does not define."""
    if model is models.Object:
        return []  # free-form by definition (unmapped, xattributes)
    if isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            out += unknown_attrs(item, model, f"{path}[{i}]")
        return out
    if not isinstance(value, dict):
        return []
    fields = {}
    for name, info in model.model_fields.items():
        fields[info.alias or name] = info.annotation
    out = []
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key in fields:
            sub = model_in(fields[key])
        elif extra and key in extra:
            sub = extra[key]
        else:
            out.append(f"{where}: not an attribute of {model.__name__} in OCSF 1.5.0")
            continue
        if sub is not None:
            out += unknown_attrs(item, sub, where)
    return out


def check(event):
    """Problems with one event; empty when it is valid."""
    if not isinstance(event, dict):
        return ["not a JSON object"]
    class_uid = event.get("class_uid")
    spec = defaults.class_spec_by_uid(class_uid) if isinstance(class_uid, int) else None
    if spec is None:
        return [f"class_uid {class_uid!r} is not an OCSF 1.5.0 class"]
    model = getattr(models, spec.model_name)
    try:
        validate(model.model_validate(event))
    except InvalidFindingError as e:
        return [str(e)] + list(e.field_errors or [])
    except Exception as e:  # pydantic's ValidationError and friends
        return [f"{spec.class_name}: {e}"]
    extra = {}
    for profile in (event.get("metadata") or {}).get("profiles") or []:
        if profile not in PROFILE_ATTRS:
            return [f"metadata.profiles: {profile!r} is not a profile this check knows"]
        extra.update(PROFILE_ATTRS[profile])
    problems = unknown_attrs(event, model, "", extra)
    # Sibling names must match their ids where the class has them.
    if event.get("class_name") not in (None, spec.class_name):
        problems.append(f"class_name: {event.get('class_name')!r} is not {spec.class_name!r}")
    return problems


def main():
    src = open(sys.argv[1], encoding="utf-8") if len(sys.argv) > 1 else sys.stdin
    failed = 0
    for n, line in enumerate(src, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as e:
            problems = [f"not JSON: {e}"]
        else:
            problems = check(event)
        if problems:
            failed += 1
            print(f"FAIL {n}: " + "; ".join(problems))
        else:
            print(f"ok {defaults.class_spec_by_uid(event['class_uid']).class_name}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
