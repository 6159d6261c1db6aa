"""Read (and write) the constructor string that official checkpoints keep in ``ckpt['args'].model``.

The official loader ``eval``s that string to build the network; we never do. The string is
parsed with :mod:`ast` and only literals are accepted: numbers, strings, booleans, ``None``,
tuples, lists, dicts and the names ``inf`` / ``nan`` (the official code defines ``inf =
float('inf')`` for exactly this string), with an optional sign. Anything else — a call, an
attribute, an operator — is refused, so a crafted string can never run code. Standard library only.
"""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import Any

from .config import ModelConfig

_NAMES = {"inf": math.inf, "nan": math.nan}


@dataclass(frozen=True)
class ConstructorCall:
    """``ClassName(key=value, ...)`` as written in a checkpoint: the class name and its keywords."""

    class_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def parse_model_string(text: str) -> ConstructorCall:
    """Parse ``"AsymmetricCroCo3DStereoMultiView(pos_embed='RoPE100', ...)"`` into a :class:`ConstructorCall`.

    Raises ``ValueError`` saying what is not a plain constructor call with literal keywords.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a Python expression ({exc.msg})") from None
    call = tree.body
    if not isinstance(call, ast.Call):
        raise ValueError("not a constructor call ClassName(...)")
    if isinstance(call.func, ast.Name):
        class_name = call.func.id
    elif isinstance(call.func, ast.Attribute):  # module.ClassName(...)
        class_name = call.func.attr
    else:
        raise ValueError("the called object is not a class name")
    if call.args:
        raise ValueError(f"{class_name}(...) has positional arguments; only keywords are understood")
    kwargs: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise ValueError(f"{class_name}(...) uses **kwargs; only explicit keywords are understood")
        try:
            kwargs[keyword.arg] = _literal(keyword.value)
        except ValueError as exc:
            raise ValueError(f"keyword {keyword.arg!r}: {exc}") from None
    return ConstructorCall(class_name, kwargs)


def _literal(node: ast.expr) -> Any:
    """The value of a literal expression node (see the module docstring for what is allowed)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("a sign in front of something that is not a number")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Tuple):
        return tuple(_literal(item) for item in node.elts)
    if isinstance(node, ast.List):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise ValueError("a dict with ** unpacking")
        return {_literal(key): _literal(value) for key, value in zip(node.keys, node.values) if key is not None}
    raise ValueError(f"unsupported expression {ast.unparse(node)!r} (only literals are read)")


def format_model_string(config: ModelConfig) -> str:
    """The official constructor string for `config` (as the released training scripts write it).

    What :func:`parse_model_string` reads back; the hard-coded head widths (``skip_dim``,
    ``gs_mlp_dim``) are not constructor arguments and live only in the tensor shapes.
    """
    extra = f", m_ref_flag=True, n_ref={config.n_ref}" if config.multi_ref else ""
    return (
        f"AsymmetricCroCo3DStereoMultiView(pos_embed='RoPE100', img_size={tuple(config.img_size)}, "
        f"head_type='linear', output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, 1e+09), "
        f"enc_embed_dim={config.enc_embed_dim}, enc_depth={config.enc_depth}, enc_num_heads={config.enc_num_heads}, "
        f"dec_embed_dim={config.dec_embed_dim}, dec_depth={config.dec_depth}, dec_num_heads={config.dec_num_heads}, "
        f"GS=True, sh_degree=0, pts_head_config={{'skip': True}}{extra})"
    )
