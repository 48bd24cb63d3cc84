"""FHIRPath invariants compiled to Python closures over the resource's JSON.

fhirpathpy interprets its parse tree node by node and wraps every value it meets; the profiles'
invariants use a small part of FHIRPath (paths, ``where``/``exists``/``all``/``empty``/``count``/
``first``/``not``/``isDistinct``/``extension()``/``is()``, string tests, ``=``/``!=``, ``and``/
``or``/``implies``), evaluated thousands of times on the same shapes. :func:`compile_invariant`
turns fhirpathpy's own parse tree of such an expression into closures with fhirpathpy's semantics
(its quirks included: ``=`` on collections of different sizes is false, ``extension(url)`` keeps
the first match, both sides of ``and``/``or`` are evaluated...). Whatever the closures are not sure
to compute exactly as fhirpathpy does (an expression outside that subset, a primitive extension
``_x``, a non-string value compared, a collection where a singleton is expected: everything that
would make fhirpathpy raise or convert types) is left to fhirpathpy: an expression it cannot
compile at all, or one evaluation when :class:`Fallback` is raised. fhirpathpy stays the
reference: ``tests/profiles/test_fhirpath_compiled.py`` compares both on every invariant and node
of the mutation corpus.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from fhirpathpy import parser as _parser
from fhirpathpy.engine.evaluators import evaluators as _EVALUATORS
from fhirpathpy.models import models as _fhirpath_models

from profiles._paths import is_mapping as _is_mapping

__all__ = ["Fallback", "compile_invariant"]

_MODEL: dict[str, Any] = _fhirpath_models["r4"]
_ELSEWHERE: dict[str, str] = _MODEL["pathsDefinedElsewhere"]
_CHOICES: dict[str, list[str]] = _MODEL["choiceTypePaths"]
_PATH2TYPE: dict[str, str] = _MODEL["path2Type"]


_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")


class Fallback(Exception):
    """This evaluation is left to fhirpathpy (it may raise, or convert values the closures do not)."""


class _Unsupported(Exception):
    """The expression uses FHIRPath the closures do not implement: fhirpathpy evaluates it."""


class _N:
    """A value reached in the resource and its fhirpathpy type path (``ResourceNode``)."""

    __slots__ = ("data", "path")

    def __init__(self, data: Any, path: str | None) -> None:
        if (type(data) is dict or (type(data) is not str and _is_mapping(data))) and "resourceType" in data:
            path = data["resourceType"]
            if not isinstance(path, str) or not _TYPE_NAME.fullmatch(path):
                raise Fallback  # fhirpathpy takes it as the node's type path, whatever it is
        self.data = data
        self.path = path


class _Root(_N):
    """The node the invariant is evaluated on (fhirpathpy keeps it as plain data, not a node)."""

    __slots__ = ()


Items = list[Any]  # _N items and plain values (booleans, numbers, strings of literals and functions)
Fn = Callable[[Items], Items]


def _data(item: Any) -> Any:
    return item.data if isinstance(item, _N) else item


#: (parent type path, key) -> (type path of a plain child, ((JSON key, "_" key, type path) per choice type))
_CHILD_PATHS: dict[tuple[str | None, str], tuple[str, tuple[tuple[str, str, str], ...]]] = {}


def _child_paths(path: str | None, key: str) -> tuple[str, tuple[tuple[str, str, str], ...]]:
    """fhirpathpy's child type path of ``key`` under ``path`` (``pathsDefinedElsewhere``, choice
    types, ``path2Type``), computed once per (path, key)."""
    found = _CHILD_PATHS.get((path, key))
    if found is None:
        child = f"{path}.{key}" if path else f"_.{key}"
        child = _ELSEWHERE.get(child, child)
        choices = tuple(
            (key + choice, "_" + key + choice, _PATH2TYPE.get(child + choice, child + choice))
            for choice in _CHOICES.get(child) or ()
        )
        plain = "Extension" if key == "extension" else child
        found = (_PATH2TYPE.get(plain, plain), choices)
        if len(_CHILD_PATHS) > 8192:  # type paths come from the input too (resourceType): bounded
            _CHILD_PATHS.clear()
        _CHILD_PATHS[(path, key)] = found
    return found


def _member(key: str) -> Fn:
    """``.key`` (fhirpathpy ``create_reduce_member_invocation``)."""
    underscored = "_" + key

    def member(items: Items) -> Items:
        out: Items = []
        for item in items:
            if not isinstance(item, _N):
                raise Fallback
            data = item.data
            if not (type(data) is dict or _is_mapping(data)):
                if key == "length" or isinstance(data, float):
                    raise Fallback
                continue
            child, choices = _child_paths(item.path, key)
            if choices:
                value = None
                for choice_key, choice_underscored, choice_child in choices:
                    value = data.get(choice_key)
                    extension = data.get(choice_underscored)
                    if value is not None or extension is not None:
                        if extension is not None:
                            raise Fallback  # a primitive extension: fhirpathpy adds its own node
                        child = choice_child
                        break
            else:
                value = data.get(key)
                if data.get(underscored) is not None:
                    raise Fallback  # a primitive extension: fhirpathpy adds its own node
            if value is None:
                continue
            if type(value) is list:
                for element in value:
                    if element is None or isinstance(element, (float, list)):
                        raise Fallback
                    out.append(_N(element, child))
            elif isinstance(value, (float, list)):
                raise Fallback  # fhirpathpy reads a JSON decimal as Decimal
            else:
                out.append(_N(value, child))
        return out

    return member


def _lookup(item: Any, key: str, underscored: str) -> tuple[Any, str] | None:
    """``(value, child path)`` of member ``key`` of ``item`` as ``_member`` finds it (a choice
    type's first present variant), None for an item that is not an object (``_member`` skips it);
    raises :class:`Fallback` where ``_member`` steps aside (a primitive extension, ``length``)."""
    if not isinstance(item, _N):
        raise Fallback
    data = item.data
    if not (type(data) is dict or _is_mapping(data)):
        if key == "length" or isinstance(data, float):
            raise Fallback
        return None
    child, choices = _child_paths(item.path, key)
    if choices:
        value = None
        for choice_key, choice_underscored, choice_child in choices:
            value = data.get(choice_key)
            extension = data.get(choice_underscored)
            if value is not None or extension is not None:
                if extension is not None:
                    raise Fallback
                child = choice_child
                break
    else:
        value = data.get(key)
        if data.get(underscored) is not None:
            raise Fallback
    return value, child


def _member_exists(key: str, empty: bool) -> Fn:
    """``.key.exists()`` (``empty``: ``.key.empty()``) without making the nodes: the answer is
    whether ``_member(key)`` would give any; it steps aside where ``_member`` does, except on the
    items' contents (a null, a number, a nested list: fhirpathpy counts them all the same)."""
    underscored = "_" + key

    def member_exists(items: Items) -> Items:
        found = False
        for item in items:
            looked = _lookup(item, key, underscored)
            if looked is None:
                continue
            value = looked[0]
            if value is None:
                continue
            if type(value) is list:
                if value:
                    found = True
            elif isinstance(value, list):
                raise Fallback
            else:
                found = True
        return [not found if empty else found]

    return member_exists


def _member_compare(key: str, literal: str, negate: bool) -> Fn:
    """``key = 'literal'`` (``negate``: ``!=``) on the current items without making nodes: what
    ``_equality(_member(key), literal)`` answers, stepping aside where they do."""
    underscored = "_" + key

    def compare(items: Items) -> Items:
        values: list[tuple[Any, str]] = []
        for item in items:
            looked = _lookup(item, key, underscored)
            if looked is None:
                continue
            value, child = looked
            if value is None:
                continue
            for element in value if type(value) is list else (value,):
                if element is None or isinstance(element, (float, list)):
                    raise Fallback
                values.append((element, _N(element, child).path or ""))  # _N: its checks, its type path
        if not values:
            return []
        if len(values) != 1:
            return [negate]
        data, path = values[0]
        if path == "Quantity" or _is_mapping(data):
            raise Fallback
        equal = bool(data == literal)
        return [not equal if negate else equal]

    return compare


def _resource_filter(name: str) -> Fn:
    """A capitalised first identifier at the root (``Encounter.extension``): the root if it is one."""

    def resource_filter(items: Items) -> Items:
        out: Items = []
        for item in items:
            data = item.data if isinstance(item, _N) else None
            if not isinstance(data, Mapping) or "resourceType" not in data:
                raise Fallback
            if data["resourceType"] == name:
                out.append(_N(data, name))
        return out

    return resource_filter


def _where_truthy(result: Items) -> bool:
    return bool(result) and (isinstance(result[0], _N) or bool(result[0]))


def _is_true(result: Items) -> bool:
    return len(result) == 1 and _data(result[0]) == True  # noqa: E712 - fhirpathpy's is_true


def _string(items: Items) -> str:
    if len(items) != 1:
        raise Fallback
    value = _data(items[0])
    if not isinstance(value, str):
        raise Fallback
    return value


def _boolean_operand(items: Items) -> Any:
    """An ``and``/``or``/``implies``/``not()`` operand: ``[]`` or a bool (fhirpathpy raises otherwise)."""
    if not items:
        return []
    if len(items) > 1:
        raise Fallback
    value = _data(items[0])
    if value is True or value is False:
        return value
    raise Fallback


def _or(a: Any, b: Any) -> Any:
    if isinstance(b, list):
        if a is True:
            return True
        if a is False or isinstance(a, list):
            return []
    if isinstance(a, list):
        return True if b is True else []
    return a or b


def _and(a: Any, b: Any) -> Any:
    if isinstance(b, list):
        if a is True:
            return []
        if a is False:
            return False
        if isinstance(a, list):
            return []
    if isinstance(a, list):
        return [] if b is True else False
    return a and b


def _implies(a: Any, b: Any) -> Any:
    if isinstance(b, list):
        if a is True or isinstance(a, list):
            return []
        if a is False:
            return True
    if isinstance(a, list):
        return True if b is True else []
    if a is False:
        return True
    return a and b


_LOGIC = {"and": _and, "or": _or, "implies": _implies}


def _arraify(value: Any) -> Items:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _comparable(items: Items) -> Any:
    item = items[0]
    if isinstance(item, _N):
        if item.path == "Quantity" or isinstance(item.data, list) or _is_mapping(item.data):
            raise Fallback  # fhirpathpy turns a Quantity into FP_Quantity
        return item.data
    return item


def _equality(op: str, left: Fn, right: Fn) -> Fn:
    negate = op == "!="

    def equality(items: Items) -> Items:
        a = left(items)
        b = right(items)
        if not a or not b:
            return []
        if len(a) != len(b):
            return [negate]
        equal = _comparable(a) == _comparable(b)
        return [not equal if negate else equal]

    return equality


def _logic(op: str, left: Fn, right: Fn) -> Fn:
    combine = _LOGIC[op]

    def logic(items: Items) -> Items:
        return _arraify(combine(_boolean_operand(left(items)), _boolean_operand(right(items))))

    return logic


def _chain(first: Fn, then: Fn) -> Fn:
    return lambda items: then(first(items))


def _function(name: str, params: list[dict[str, Any]]) -> Fn:
    if name in ("exists", "where", "all"):
        if (name != "exists" and len(params) != 1) or len(params) > 1:
            raise _Unsupported(name)
        criteria = _compile(params[0], False) if params else None
        if criteria is None:
            return lambda items: [bool(items)]

        def where(items: Items) -> Items:
            return [item for item in items if _where_truthy(criteria([item]))]

        if name == "where":
            return where
        if name == "exists":
            return lambda items: [bool(where(items))]
        return lambda items: [all(_is_true(criteria([item])) for item in items)]
    if params and name in ("empty", "not", "count", "first", "isDistinct"):
        raise _Unsupported(name)
    if name == "empty":
        return lambda items: [not items]
    if name == "count":
        return lambda items: [len(items)]
    if name == "first":
        return lambda items: items[:1]
    if name == "not":

        def not_(items: Items) -> Items:
            if len(items) != 1:
                return []
            return [not _boolean_operand(items)]

        return not_
    if name == "isDistinct":

        def is_distinct(items: Items) -> Items:
            values = [_data(item) for item in items]
            if not all(isinstance(item, _N) and isinstance(item.data, str) for item in items):
                raise Fallback
            return [len(set(values)) == len(values)]

        return is_distinct
    if len(params) != 1:
        raise _Unsupported(name)
    if name == "is":
        type_name = _type_name(params[0])

        def is_(items: Items) -> Items:
            if not items:
                return []
            if len(items) > 1 or not isinstance(items[0], _N) or isinstance(items[0], _Root):
                raise Fallback
            data = items[0].data
            if not _is_mapping(data) or "resourceType" not in data:
                raise Fallback
            return [_is_type(items[0].path, type_name)]

        return is_
    argument = _string_literal(params[0])
    if name == "extension":

        def extension(items: Items) -> Items:
            out: Items = []
            for item in items:
                element = _data(item)
                if not _is_mapping(element):
                    continue
                extensions = element.get("extension", [])
                if not isinstance(extensions, list):
                    raise Fallback
                for ext in extensions:
                    if not _is_mapping(ext) or "url" not in ext:
                        raise Fallback
                for ext in extensions:
                    if ext["url"] == argument:
                        out.append(_N(ext, "Extension"))
                        break
            return out

        return extension
    if name in ("contains", "startsWith", "matches"):
        pattern = re.compile(argument, re.DOTALL) if name == "matches" else None

        def string_test(items: Items) -> Items:
            if not items:
                return []
            text = _string(items)
            if name == "contains":
                return [argument in text]
            if name == "startsWith":
                return [bool(text) and text.startswith(argument)]
            if not argument:
                return []
            assert pattern is not None
            return [pattern.search(text) is not None]

        return string_test
    raise _Unsupported(name)


def _is_type(type_name: str | None, super_type: str) -> bool:
    """fhirpathpy's ``TypeInfo.is_type`` with the R4 model (what ``is()`` sets before it asks)."""
    parents: dict[str, str] = _MODEL["type2Parent"]
    seen = 0
    while type_name:
        if type_name == super_type:
            return True
        type_name = parents.get(type_name) or _PATH2TYPE.get(type_name)
        seen += 1
        if seen > 64:
            raise Fallback
    return False


def _literal(kind: str, node: dict[str, Any]) -> list[Any]:
    """A literal's value(s) as fhirpathpy's evaluator reads them."""
    evaluator: Callable[[Any, Any, dict[str, Any]], list[Any]] = _EVALUATORS[kind]
    return evaluator(None, None, node)


def _string_literal(node: dict[str, Any]) -> str:
    """A parameter that is a string literal (``'...'``), as fhirpathpy reads it."""
    while node["type"] in ("TermExpression", "LiteralTerm") and len(node.get("children") or []) == 1:
        node = node["children"][0]
    if node["type"] != "StringLiteral":
        raise _Unsupported(node["type"])
    value = _literal("StringLiteral", node)[0]
    if not isinstance(value, str):
        raise _Unsupported("string literal")
    return value


def _type_name(node: dict[str, Any]) -> str:
    text = str(node.get("text", ""))
    if not re.fullmatch(r"[A-Z][A-Za-z]+", text):
        raise _Unsupported(f"type {text!r}")
    return text


def _member_equality(op: str, left: dict[str, Any], right: dict[str, Any]) -> Fn | None:
    """``key = 'literal'`` / ``key != 'literal'`` fused (no node made), or ``None``."""
    if left["type"] != "TermExpression" or right["type"] != "TermExpression":
        return None
    term, literal = left["children"][0], right["children"][0]
    if term["type"] != "InvocationTerm" or literal["type"] != "LiteralTerm":
        return None
    member, value = term["children"][0], literal["children"][0]
    if member["type"] != "MemberInvocation" or value["type"] != "StringLiteral":
        return None
    key = str(member["children"][0].get("text"))
    if not re.fullmatch(r"[a-z][A-Za-z0-9_]*", key):
        return None
    (text,) = _literal("StringLiteral", value)
    if not isinstance(text, str):
        return None
    return _member_compare(key, text, op == "!=")


def _member_existence(first: dict[str, Any], invocation: dict[str, Any], at_root: bool) -> Fn | None:
    """``<path>.key.exists()`` / ``.empty()`` fused (no node made for the items of ``key``), or ``None``."""
    if invocation["type"] != "FunctionInvocation":
        return None
    functn = invocation["children"][0]
    name = functn["children"][0].get("text")
    if name not in ("exists", "empty") or len(functn["children"]) > 1:
        return None
    if first["type"] == "TermExpression" and first["children"][0]["type"] == "InvocationTerm":
        member, source = first["children"][0]["children"][0], None
    elif first["type"] == "InvocationExpression":
        source, member = first["children"]
    else:
        return None
    if member["type"] != "MemberInvocation":
        return None
    key = str(member["children"][0].get("text"))
    if not re.fullmatch(r"[a-z][A-Za-z0-9_]*", key):
        return None  # a resource type filter, a quoted name...
    fused = _member_exists(key, name == "empty")
    if source is None:
        return fused
    return _chain(_compile(source, at_root), fused)


def _invocation(node: dict[str, Any], at_root: bool) -> Fn:
    """A ``MemberInvocation`` or ``FunctionInvocation`` applied to the current collection."""
    kind = node["type"]
    if kind == "MemberInvocation":
        (identifier,) = node["children"]
        if identifier["type"] != "Identifier":
            raise _Unsupported(identifier["type"])
        key = str(identifier["text"])
        if key.startswith(("`", '"')) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key):
            raise _Unsupported(key)
        if key[0].isupper():
            if not at_root:
                raise _Unsupported(key)
            return _resource_filter(key)
        return _member(key)
    if kind == "FunctionInvocation":
        (functn,) = node["children"]
        identifier = functn["children"][0]
        params: list[dict[str, Any]] = []
        if len(functn["children"]) > 1:
            param_list = functn["children"][1]
            if param_list["type"] != "ParamList":
                raise _Unsupported(param_list["type"])
            params = list(param_list["children"])
        return _function(str(identifier["text"]), params)
    raise _Unsupported(kind)


def _compile(node: dict[str, Any], at_root: bool) -> Fn:
    kind = node["type"]
    children = node.get("children") or []
    if kind in ("TermExpression", "InvocationTerm", "ParenthesizedTerm"):
        if len(children) != 1:
            raise _Unsupported(kind)
        if kind == "InvocationTerm":
            return _invocation(children[0], at_root)
        return _compile(children[0], at_root)
    if kind == "LiteralTerm":
        (literal,) = children
        if literal["type"] == "StringLiteral":
            text = _literal("StringLiteral", literal)
        elif literal["type"] == "NumberLiteral":
            text = _literal("NumberLiteral", literal)
        else:
            raise _Unsupported(literal["type"])
        return lambda items: list(text)
    if kind == "InvocationExpression":
        first, invocation = children
        fused = _member_existence(first, invocation, at_root)
        if fused is not None:
            return fused
        return _chain(_compile(first, at_root), _invocation(invocation, False))
    if kind == "EqualityExpression":
        op = node["terminalNodeText"][0]
        if op not in ("=", "!="):
            raise _Unsupported(op)
        fused = _member_equality(op, children[0], children[1])
        if fused is not None:
            return fused
        return _equality(op, _compile(children[0], at_root), _compile(children[1], at_root))
    if kind in ("AndExpression", "OrExpression", "ImpliesExpression"):
        op = node["terminalNodeText"][0]
        if op not in _LOGIC:
            raise _Unsupported(op)
        return _logic(op, _compile(children[0], at_root), _compile(children[1], at_root))
    raise _Unsupported(kind)


def compile_invariant(expression: str) -> Callable[[Any], list[Any]] | None:
    """``expression`` as a function of the node value (raising :class:`Fallback` where fhirpathpy
    must decide), or ``None`` when it is outside the compiled subset."""
    try:
        tree: dict[str, Any] = _parser.parse(expression)  # type: ignore[no-untyped-call]
        (root,) = tree["children"]
        fn = _compile(root, True)
    except _Unsupported:
        return None

    def evaluate(value: Any) -> list[Any]:
        if value is None or isinstance(value, list):
            raise Fallback  # fhirpathpy takes a list as the collection itself
        out = [_data(item) for item in fn([_Root(value, None)])]
        if any(not (item is True or item is False) and (_is_mapping(item) or isinstance(item, list)) for item in out):
            raise Fallback  # fhirpathpy drops extension-only objects from a result
        return out

    return evaluate
