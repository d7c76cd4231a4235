"""Checkpoints of tile states: ``dump_extra`` / ``load_extra`` and msgpack files (``save`` / ``load``).

``dump_extra(state)`` returns everything beyond the weights (device parameters, periphery
parameters, noise-management value, drift memory, hidden update index, compound bookkeeping, the
rpu config) as a plain dict of str / int / float / bool / list / dict, JSON- and msgpack-able.
Arrays are stored exactly (raw bytes, base64) with their dtype and shape; configs by class name
and fields. ``load_extra`` puts such a dict back into a state.

``save(path, state)`` writes one file with flax's msgpack serialization (weights + extra state +
a CRC-32 of the body), atomically: a temporary file in the same directory is written, flushed,
fsync'ed and then renamed over ``path`` with ``os.replace``, so a crash mid-save leaves the old
checkpoint intact. ``load(path)`` rebuilds the state from the stored config; ``load(path, like=s)``
checks shape and config against ``s`` first. A reloaded tile continues bit-identically: same
inputs and keys give the same results as the tile that was saved.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import importlib
import math
import os
import tempfile
import warnings
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from rpujax.tile.state import TileState

Array = jax.Array

__all__ = [
    "CheckpointError",
    "config_from_dict",
    "config_to_dict",
    "dump_extra",
    "load",
    "load_extra",
    "save",
]

FORMAT = "rpujax.tile"
VERSION = 1
_FILE_FORMAT = "rpujax.checkpoint"
_GROUPS = ("device", "fwd", "bwd", "drift", "aux")
_SCALARS = ("nm_value", "hidden_update_index")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the tile it is loaded into."""


# ---------------------------------------------------------------------------------------------
# configs <-> plain dicts
# ---------------------------------------------------------------------------------------------


def _qualname(obj: type) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def config_to_dict(obj: Any) -> Any:
    """A config (frozen dataclass tree) as plain JSON-able data: class names and init fields.

    Dataclasses become ``{"__dataclass__": "module:Class", "fields": {...}}``, enums
    ``{"__enum__": "module:Class", "name": ...}``, tuples ``{"__tuple__": [...]}``, non-finite
    floats ``{"__float__": "inf" | "-inf" | "nan"}``.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        return {"__dataclass__": _qualname(type(obj)), "fields": fields}
    if isinstance(obj, enum.Enum):
        return {"__enum__": _qualname(type(obj)), "name": obj.name}
    if isinstance(obj, tuple):
        return {"__tuple__": [config_to_dict(v) for v in obj]}
    if isinstance(obj, list):
        return [config_to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot serialise config value {obj!r} of type {type(obj).__name__}")


def _resolve(qualname: str) -> Any:
    module, _, name = qualname.partition(":")
    if not (module == "rpujax" or module.startswith("rpujax.")):
        # A checkpoint is data: never import arbitrary modules named in a file.
        raise CheckpointError(f"config class {qualname!r} is not an rpujax class")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def config_from_dict(data: Any) -> Any:
    """Inverse of :func:`config_to_dict` (only rpujax classes are instantiated)."""
    if isinstance(data, dict):
        if "__dataclass__" in data:
            cls = _resolve(data["__dataclass__"])
            return cls(**{k: config_from_dict(v) for k, v in data["fields"].items()})
        if "__enum__" in data:
            return _resolve(data["__enum__"])[data["name"]]
        if "__tuple__" in data:
            return tuple(config_from_dict(v) for v in data["__tuple__"])
        if "__float__" in data:
            return float(data["__float__"])
        return {k: config_from_dict(v) for k, v in data.items()}
    if isinstance(data, list):
        return [config_from_dict(v) for v in data]
    return data


# ---------------------------------------------------------------------------------------------
# arrays <-> plain data
# ---------------------------------------------------------------------------------------------


def _is_key_array(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _encode_array(x: Any, binary: bool) -> Any:
    if _is_key_array(x):
        impl = str(jax.random.key_impl(x))
        return {"__prng_key__": impl, "data": _encode_array(jax.random.key_data(x), binary)}
    arr = np.asarray(x)
    if binary:
        return arr
    return {
        "__ndarray__": arr.dtype.name,
        "shape": list(arr.shape),
        "data": base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode("ascii"),
    }


def _encode_tree(value: Any, binary: bool) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _encode_tree(v, binary) for k, v in value.items()}
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        return _encode_array(value, binary)
    if isinstance(value, (list, tuple)):
        return {"__tuple__" if isinstance(value, tuple) else "__list__": [_encode_tree(v, binary) for v in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"cannot serialise state entry {value!r} of type {type(value).__name__}")


def _decode_array(data: Any) -> Any:
    if isinstance(data, Mapping) and "__prng_key__" in data:
        key_data = jnp.asarray(_decode_array(data["data"]))
        return jax.random.wrap_key_data(key_data, impl=data["__prng_key__"])
    if isinstance(data, Mapping) and "__ndarray__" in data:
        raw = base64.b64decode(data["data"])
        arr = np.frombuffer(raw, dtype=np.dtype(data["__ndarray__"])).reshape(data["shape"])
        return jnp.asarray(arr.copy())
    return jnp.asarray(data)


def _decode_tree(data: Any) -> Any:
    if isinstance(data, Mapping):
        if "__ndarray__" in data or "__prng_key__" in data:
            return _decode_array(data)
        if "__tuple__" in data:
            return tuple(_decode_tree(v) for v in data["__tuple__"])
        if "__list__" in data:
            return [_decode_tree(v) for v in data["__list__"]]
        return {k: _decode_tree(v) for k, v in data.items()}
    if isinstance(data, (np.ndarray, jax.Array, np.generic)):
        return jnp.asarray(data)
    return data


# ---------------------------------------------------------------------------------------------
# dump_extra / load_extra
# ---------------------------------------------------------------------------------------------


def _dump(state: TileState, binary: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "shape": list(state.weights.shape),
        "dtype": np.dtype(state.weights.dtype).name,
        "bias": bool(state.bias),
        "rpu_config": config_to_dict(state.rpu_config),
    }
    for name in _SCALARS:
        out[name] = _encode_array(getattr(state, name), binary)
    for group in _GROUPS:
        out[group] = _encode_tree(getattr(state, group), binary)
    return out


def dump_extra(state: TileState) -> dict[str, Any]:
    """Everything of a tile beyond its weights, as plain JSON- and msgpack-able data.

    Keys: ``format``, ``version``, ``shape`` and ``dtype`` (of the weights), ``bias``,
    ``rpu_config`` (see :func:`config_to_dict`), ``nm_value``, ``hidden_update_index``, and the
    groups ``device`` (hidden device parameters), ``fwd`` / ``bwd`` (periphery parameters),
    ``drift`` (drift clocks and memory), ``aux`` (compound bookkeeping, delta-weight buffer).
    Arrays are ``{"__ndarray__": dtype, "shape": [...], "data": base64 bytes}`` (exact). Works on
    a batch of tiles too (arrays keep their leading axis). Must be called outside ``jit``.
    """
    return _dump(state, binary=False)


def _describe_config(data: Any) -> str:
    try:
        return repr(config_from_dict(data))
    except Exception:  # an unknown or invalid class: show the stored data itself
        return repr(data)


def _note(problems: list[str], strict: bool, message: str) -> None:
    if strict:
        raise CheckpointError(message)
    problems.append(message)


def _load_value(name: str, current: Any, stored: Any, strict: bool, problems: list[str]) -> Any:
    """The stored value if it fits the current one (shape and dtype), else the current one."""
    value = _decode_tree(stored)
    cur_leaves, cur_def = jax.tree.flatten(current)
    new_leaves, new_def = jax.tree.flatten(value)
    if cur_def != new_def:
        _note(problems, strict, f"{name}: stored structure {new_def} does not match the tile's {cur_def}")
        return current
    fixed = []
    for a, b in zip(cur_leaves, new_leaves):
        if _is_key_array(a) or _is_key_array(b):
            if not (_is_key_array(a) and _is_key_array(b)) or a.shape != b.shape or a.dtype != b.dtype:
                _note(problems, strict, f"{name}: stored key {b!r} does not match the tile's {a!r}")
                return current
            fixed.append(b)
            continue
        a_arr, b_arr = jnp.asarray(a), jnp.asarray(b)
        if a_arr.shape != b_arr.shape or a_arr.dtype != b_arr.dtype:
            _note(
                problems,
                strict,
                f"{name}: stored array has shape {tuple(b_arr.shape)} and dtype {b_arr.dtype}, the "
                f"tile's has shape {tuple(a_arr.shape)} and dtype {a_arr.dtype}",
            )
            return current
        fixed.append(b if isinstance(a, (jax.Array, np.ndarray)) else type(a)(b_arr))
    return jax.tree.unflatten(cur_def, fixed)


def _check_header(extra: Mapping[str, Any]) -> None:
    if not isinstance(extra, Mapping) or extra.get("format") != FORMAT:
        found = extra.get("format") if isinstance(extra, Mapping) else type(extra).__name__
        raise CheckpointError(f"not an rpujax tile state (format {found!r}, expected {FORMAT!r})")
    if extra.get("version") != VERSION:
        raise CheckpointError(f"rpujax tile state version {extra.get('version')!r} is not supported (expected {VERSION})")


def load_extra(state: TileState, extra: Mapping[str, Any], strict: bool = False) -> TileState:
    """Put the output of :func:`dump_extra` back into a tile (aihwkit ``load_extra``).

    The tile's own structure decides what is loaded: for every entry of ``state`` (scalars and the
    groups ``device``, ``fwd``, ``bwd``, ``drift``, ``aux``) the stored value with the same name,
    shape and dtype replaces it. The weights are not part of ``extra``.

    ``strict=True``: a different rpu config (or bias / weight shape), a missing or unexpected key,
    or a shape / dtype mismatch raises :class:`CheckpointError` naming it (for configs: both of
    them). ``strict=False`` (aihwkit's default): entries that do not fit are skipped and reported
    in one ``UserWarning`` (a config mismatch included); everything that fits is loaded.

    Returns:
      The new state.
    """
    _check_header(extra)
    problems: list[str] = []
    mine = config_to_dict(state.rpu_config)
    if extra.get("rpu_config") != mine:
        _note(
            problems,
            strict,
            "rpu config mismatch: the stored state was made with "
            f"{_describe_config(extra.get('rpu_config'))}, this tile has {state.rpu_config!r}",
        )
    if bool(extra.get("bias")) != bool(state.bias) or list(extra.get("shape", [])) != list(state.weights.shape):
        _note(
            problems,
            strict,
            f"tile mismatch: stored weights shape {extra.get('shape')} with bias={extra.get('bias')}, this "
            f"tile has shape {list(state.weights.shape)} with bias={state.bias}",
        )

    updates: dict[str, Any] = {}
    for name in _SCALARS:
        if name not in extra:
            _note(problems, strict, f"missing key {name!r}")
            continue
        updates[name] = _load_value(name, getattr(state, name), extra[name], strict, problems)
    for group in _GROUPS:
        current = dict(getattr(state, group))
        stored = extra.get(group)
        if stored is None:
            if current:
                _note(problems, strict, f"missing group {group!r}")
            continue
        for key in current:
            if key not in stored:
                _note(problems, strict, f"missing key {group}.{key}")
        for key in stored:
            if key not in current:
                _note(problems, strict, f"unexpected key {group}.{key}")
        for key in current:
            if key in stored:
                current[key] = _load_value(f"{group}.{key}", current[key], stored[key], strict, problems)
        updates[group] = current
    known = {"format", "version", "shape", "dtype", "bias", "rpu_config", *_SCALARS, *_GROUPS}
    for key in extra:
        if key not in known:
            _note(problems, strict, f"unexpected key {key!r}")
    if problems:
        warnings.warn("load_extra skipped: " + "; ".join(problems), UserWarning, stacklevel=2)
    return state.replace(**updates)


def _state_from_extra(weights: Any, extra: Mapping[str, Any]) -> TileState:
    _check_header(extra)
    try:
        rpu_config = config_from_dict(extra["rpu_config"])
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"stored rpu config cannot be rebuilt: {err}") from err
    weights = jnp.asarray(np.asarray(weights))
    if list(weights.shape) != list(extra["shape"]) or np.dtype(weights.dtype).name != extra["dtype"]:
        raise CheckpointError(
            f"stored weights have shape {list(weights.shape)} and dtype {weights.dtype}, the header says "
            f"{extra['shape']} and {extra['dtype']}"
        )
    kwargs = {name: _decode_array(extra[name]) for name in _SCALARS}
    for group in _GROUPS:
        kwargs[group] = _decode_tree(extra.get(group, {}))
    return TileState(weights=weights, rpu_config=rpu_config, bias=bool(extra["bias"]), **kwargs)


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------


def save(path: str | os.PathLike[str], state: TileState) -> None:
    """Write ``state`` to ``path`` (flax msgpack), atomically.

    The body (weights + :func:`dump_extra` content) is serialised with
    ``flax.serialization.msgpack_serialize`` and wrapped with a CRC-32, so that a damaged file is
    recognised on load. The file is written to a temporary file in the same directory, flushed,
    fsync'ed, and moved over ``path`` with ``os.replace``: an existing checkpoint is replaced in
    one step or not at all. Must be called outside ``jit``.
    """
    path = os.fspath(path)
    body = serialization.msgpack_serialize({"weights": np.asarray(state.weights), "extra": _dump(state, binary=True)})
    blob = serialization.msgpack_serialize(
        {"format": _FILE_FORMAT, "version": VERSION, "crc32": zlib.crc32(body), "body": body}
    )
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".rpujax-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable (POSIX); not available everywhere
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _read(path: str) -> tuple[Any, dict[str, Any]]:
    with open(path, "rb") as f:
        blob = f.read()
    try:
        outer = serialization.msgpack_restore(blob)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable rpujax checkpoint (corrupted or truncated?): {err}") from err
    if not isinstance(outer, dict) or outer.get("format") != _FILE_FORMAT:
        raise CheckpointError(f"{path}: not an rpujax checkpoint (no {_FILE_FORMAT!r} header)")
    if outer.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {outer.get('version')!r} is not supported (expected {VERSION})")
    body = outer.get("body")
    if not isinstance(body, bytes) or zlib.crc32(body) != outer.get("crc32"):
        raise CheckpointError(f"{path}: checkpoint is corrupted (CRC-32 mismatch)")
    try:
        payload = serialization.msgpack_restore(body)
        return payload["weights"], payload["extra"]
    except Exception as err:
        raise CheckpointError(f"{path}: checkpoint body cannot be decoded: {err}") from err


def load(path: str | os.PathLike[str], like: TileState | None = None) -> TileState:
    """Read a tile written by :func:`save`.

    Without ``like`` the state is rebuilt from the stored rpu config and arrays. With ``like``
    the stored weight shape, bias flag and rpu config must equal ``like``'s (otherwise
    :class:`CheckpointError` naming both), and the stored arrays must fit ``like``'s structure
    (``load_extra(..., strict=True)``); the result has ``like``'s structure and the stored values.

    Raises:
      CheckpointError: the file is damaged, is not an rpujax checkpoint, or does not fit ``like``.
    """
    path = os.fspath(path)
    weights, extra = _read(path)
    if like is None:
        return _state_from_extra(weights, extra)
    _check_header(extra)
    stored_shape = list(np.shape(weights))
    if stored_shape != list(like.weights.shape) or bool(extra.get("bias")) != bool(like.bias):
        raise CheckpointError(
            f"{path}: stored tile has weights shape {stored_shape} with bias={extra.get('bias')}, the "
            f"target has {list(like.weights.shape)} with bias={like.bias}"
        )
    if extra.get("rpu_config") != config_to_dict(like.rpu_config):
        raise CheckpointError(
            f"{path}: stored tile was made with {_describe_config(extra.get('rpu_config'))}, the target "
            f"has {like.rpu_config!r}"
        )
    w = np.asarray(weights)
    if w.dtype != np.dtype(like.weights.dtype):
        raise CheckpointError(f"{path}: stored weights have dtype {w.dtype}, the target has {like.weights.dtype}")
    state = load_extra(like, extra, strict=True)
    return state.replace(weights=jnp.asarray(w))
