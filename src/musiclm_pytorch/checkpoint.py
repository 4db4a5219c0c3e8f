"""One checkpoint format for every component: config + weights in one safetensors file.

A checkpoint is a ``.safetensors`` file whose metadata holds ``format_version``, ``component``
(the registered name of the class) and ``config`` (JSON of the constructor arguments, nested
components included). ``load(path)`` rebuilds the model from that config with no architecture
arguments, then loads the weights strictly. Files are written to a temporary name in the same
folder and renamed, so a killed writer never leaves a half file under the real name
(:func:`atomic_path`, which the other writers of the package use too); the file gets the mode any
new file gets (``0o666`` less the umask), not a temporary file's ``0o600``.

A class joins the format by subclassing :class:`Component`, giving ``component_name`` and
recording its constructor arguments with ``self.save_config(...)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "Component",
    "CheckpointError",
    "save",
    "load",
    "read_header",
    "atomic_path",
    "identity",
    "check_identity",
    "STAGE_INPUTS",
    "stage_identity",
    "FORMAT_VERSION",
]

FORMAT_VERSION = 1
_REGISTRY: dict[str, type[Component]] = {}
_NESTED = "__component__"
# where each built-in component is defined: ``load`` imports the module on first use, so a file loads
# whichever parts of the package the caller happened to import first
_BUILTIN_MODULES = {
    "soundstream": "musiclm_pytorch.codec.soundstream",
    "mdct_codec": "musiclm_pytorch.codec.mdct",
    "spectral_codec": "musiclm_pytorch.codec.spectral",
    "pretrained_codec": "musiclm_pytorch.codec.pretrained",
    "semantic_tokenizer": "musiclm_pytorch.semantic.tokenizer",
    "token_lm": "musiclm_pytorch.lm.transformer",
    "masked_acoustic_lm": "musiclm_pytorch.lm.masked",
    "latent_acoustic_lm": "musiclm_pytorch.lm.regression",
    "flow_acoustic_lm": "musiclm_pytorch.lm.flow",
    "retrieval_prior": "musiclm_pytorch.lm.prior",
    "mulan_embed_quantizer": "musiclm_pytorch.conditioning",
    "mulan": "musiclm_pytorch.mulan.model",
    "audio_spectrogram_transformer": "musiclm_pytorch.mulan.audio_tower",
    "text_transformer": "musiclm_pytorch.mulan.text_tower",
    "pretrained_text_transformer": "musiclm_pytorch.mulan.text_tower",
}


def _registered(name: str) -> type[Component] | None:
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    return _REGISTRY.get(name)


T = TypeVar("T", bound="Component")


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, of another format version, or of the wrong component."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        super().__init__(f"bad checkpoint {self.path!r}: {reason}")


class Component(nn.Module):
    """A module that can describe itself as a JSON config and be rebuilt from it.

    Subclasses set ``component_name`` and call ``self.save_config(**kwargs)`` in ``__init__`` with
    every constructor argument. Values may be JSON types, tuples (stored as lists) or other
    components (stored nested and rebuilt first).
    """

    component_name: ClassVar[str] = ""
    _config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("component_name")
        if name:
            if name in _REGISTRY and _REGISTRY[name] is not cls:
                raise RuntimeError(f"component name {name!r} registered twice")
            _REGISTRY[name] = cls

    def save_config(self, **kwargs: Any) -> None:
        self._config = kwargs

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-serialisable (nested components as tagged dicts)."""
        return {k: _encode(v) for k, v in self._config.items()}

    @classmethod
    def from_config(cls: type[T], config: dict[str, Any]) -> T:
        return cls(**{k: _decode(v) for k, v in config.items()})

    def save(self, path: str | os.PathLike) -> Path:
        return save(self, path)


def _encode(value: Any) -> Any:
    if isinstance(value, Component):
        return {_NESTED: value.component_name, "config": value.config}
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"config value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and _NESTED in value:
        return build(value[_NESTED], value["config"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    return value


def build(component: str, config: dict[str, Any]) -> Component:
    """Construct a registered component from its name and config."""
    cls = _registered(component)
    if cls is None:
        raise ValueError(f"unknown component {component!r}; registered: {sorted(_REGISTRY)}")
    return cls.from_config(config)


def external_prefixes(model: nn.Module) -> list[str]:
    """State-dict prefixes of submodules whose weights ship in a package and stay frozen (marked
    ``external_weights = True``, e.g. the built-in MiniLM text encoder): they are rebuilt from that
    package on load, so checkpoints do not carry them."""
    return [f"{name}." if name else "" for name, m in model.named_modules() if getattr(m, "external_weights", False)]


def _state_dict_for_save(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied weights); store clones: load_state_dict
    # re-ties them through the module graph.
    skip = tuple(external_prefixes(model))
    return {
        k: v.detach().cpu().contiguous().clone()
        for k, v in model.state_dict().items()
        if not (skip and k.startswith(skip))
    }


def save(model: Component, path: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (weights + config) to ``path`` atomically. Returns the path."""
    if not isinstance(model, Component):
        raise TypeError(f"save() needs a Component, got {type(model).__name__}")
    metadata = {
        "format_version": str(FORMAT_VERSION),
        "component": model.component_name,
        "config": json.dumps(model.config),
        "extra": json.dumps(extra or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(_state_dict_for_save(model), str(tmp), metadata=metadata)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A new empty file beside ``path`` to write to, renamed onto ``path`` when the block ends and
    removed if it raises: a killed or failing writer never leaves a half file under the real name.

    The file is created as ``open`` creates files (mode ``0o666`` less the process umask), so the
    result is as readable as any other file of the user's; ``tempfile.mkstemp``'s ``0o600`` would
    survive the rename. A writer that replaces the file instead of writing into it (safetensors 0.8
    puts a new file of mode ``0o600`` there) gets that mode put back.

    Args:
        path: the final file; its folder is created if missing.
        suffix: the temporary name's ending (some writers pick the format from it, e.g. ``".wav"``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the kernel applies the umask
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temporary name beside {str(path)!r} after 100 tries")
    try:
        mode = stat.S_IMODE(tmp.stat().st_mode)  # read back rather than os.umask(): that call sets it
        yield tmp
        if stat.S_IMODE(tmp.stat().st_mode) != mode:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``{format_version, component, config, extra}`` without loading weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(path, f"not a readable safetensors file ({e})") from e
    missing = {"format_version", "component", "config"} - set(meta)
    if missing:
        raise CheckpointError(path, f"metadata lacks {sorted(missing)}; not a musiclm_pytorch checkpoint")
    if meta["format_version"] != str(FORMAT_VERSION):
        raise CheckpointError(path, f"format_version {meta['format_version']} but this package reads {FORMAT_VERSION}")
    try:
        config = json.loads(meta["config"])
        extra = json.loads(meta.get("extra", "{}"))
    except json.JSONDecodeError as e:
        raise CheckpointError(path, f"config is not valid JSON ({e})") from e
    return {
        "format_version": FORMAT_VERSION,
        "component": meta["component"],
        "config": config,
        "extra": extra,
    }


def load(path: str | os.PathLike, *, expected: type[T] | None = None, map_location: str | torch.device = "cpu") -> T:
    """Rebuild a component from a checkpoint written by :func:`save`.

    Args:
        path: the ``.safetensors`` file.
        expected: if given, the file must hold this class (or a subclass), or a component that holds one
            (its class's ``inner_components``: component name -> attribute; e.g. the conditioning file
            gives its MuLaN), else ``CheckpointError``.
        map_location: device for the weights.
    """
    header = read_header(path)
    name = header["component"]
    cls = _registered(name)
    if cls is None:
        raise CheckpointError(path, f"unknown component {name!r}; registered: {sorted(_REGISTRY)}")
    inner = getattr(cls, "inner_components", {}).get(getattr(expected, "component_name", None))
    if expected is not None and not issubclass(cls, expected) and inner is None:
        raise CheckpointError(path, f"holds a {name!r}, expected a {expected.component_name!r}")
    try:
        model = cls.from_config(header["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(path, f"config does not build a {name!r}: {e}") from e
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(path, f"weights unreadable ({e})") from e
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # size mismatches
        raise CheckpointError(path, f"weights do not match the config: {e}") from e
    external = tuple(external_prefixes(model))
    missing = [k for k in result.missing_keys if not (external and k.startswith(external))]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            path,
            f"weights do not match the config: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}",
        )
    if inner is not None:  # a component stored inside another (the conditioning's MuLaN): one copy on disk
        return getattr(model, inner)
    return model  # type: ignore[return-value]


def identity(component: Component) -> dict[str, str]:
    """``{component, hash}``: the hash covers the config and the weights."""
    h = hashlib.sha256(json.dumps(component.config, sort_keys=True).encode())
    for k, v in sorted(component.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return {"component": component.component_name, "hash": h.hexdigest()[:16]}


# the components whose tokens each stage LM reads: a semantic LM stays valid when only the codec changes
STAGE_INPUTS = {
    "semantic": ("conditioner", "semantic"),
    "coarse": ("conditioner", "semantic", "codec"),
    "fine": ("conditioner", "codec"),
    "acoustic": ("mulan", "semantic", "codec"),  # continuous MuLaN latents, not the conditioner's ids
    "latent": ("mulan", "semantic", "codec"),
    "flow": ("mulan", "semantic", "codec"),
    # the retrieval prior: MuLaN audio latents and semantic id counts (+ codec codes with a frame bank)
    "prior": ("mulan", "semantic", "codec"),
}


def stage_identity(stage: str, identity: dict[str, Any]) -> dict[str, Any]:
    """The part of a tokens file's ``identity`` that ``stage`` depends on (``STAGE_INPUTS``)."""
    return {k: v for k, v in identity.items() if k in STAGE_INPUTS[stage]}


def check_identity(expected: dict[str, dict[str, str]], **components: Component | dict[str, str]) -> None:
    """Raise ``ValueError`` naming both sides when a component differs from the one trained with.
    A component may be given as its :func:`identity` already computed (hashing the weights is the cost)."""
    for name, comp in components.items():
        if name not in expected:
            continue
        actual = comp if isinstance(comp, dict) else identity(comp)
        if actual != expected[name]:
            raise ValueError(f"{name} {actual} differs from the one this stage was trained with {expected[name]}")
