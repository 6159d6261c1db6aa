"""A stand-in for ``bpy.types.UILayout`` that records what a panel or preferences ``draw()`` asks
for: panels cannot be drawn headless (blender-notes §6), their draw code can."""
from __future__ import annotations

from typing import Any


class RecordingLayout:
    """Records every call and attribute set in one log shared with the child layouts it returns."""

    def __init__(self, log: list[tuple[str, tuple[Any, ...], dict[str, Any]]] | None = None) -> None:
        object.__setattr__(self, "log", [] if log is None else log)

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.log.append((name, args, kwargs))
            return RecordingLayout(self.log)
        return call

    def __setattr__(self, name: str, value: Any) -> None:
        self.log.append((f"set {name}", (value,), {}))

    def labels(self) -> list[str]:
        return [kw.get("text", "") for name, _, kw in self.log if name == "label"]

    def operators(self) -> list[str]:
        """Operator ids, in drawing order."""
        return [args[0] for name, args, _ in self.log if name == "operator"]

    def buttons(self) -> list[tuple[str, str]]:
        """(operator id, button text) pairs, in drawing order."""
        return [(args[0], kw.get("text", "")) for name, args, kw in self.log if name == "operator"]

    def props(self) -> list[str]:
        return [args[1] for name, args, _ in self.log if name == "prop"]


class PreferencesView:
    """Real add-on preferences with a recording layout (``AddonPreferences.layout`` is read-only)."""

    def __init__(self, real: Any, layout: RecordingLayout) -> None:
        self._real, self.layout = real, layout

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def draw_preferences(prefs: Any, context: Any) -> RecordingLayout:
    """What the preferences' ``draw()`` asks for, with their real values."""
    layout = RecordingLayout()
    type(prefs).draw(PreferencesView(prefs, layout), context)
    return layout
