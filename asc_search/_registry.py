"""A registry of named, frozen presets (budgets, device profiles, blocks, front-ends): register once, look up with a
clear error, unregister a plugin's entry."""

from __future__ import annotations

from typing import Generic, TypeVar

from asc_search._errors import UserInputError

T = TypeVar("T")


class NamedRegistry(Generic[T]):
    """Items with a ``name`` attribute, registered once and looked up by name.

    Args:
        kind: What the items are, for messages (``"budget"``).
        valid_label: Lead-in of the list of valid names in the unknown-name error (``"valid budgets"``).
        hint: Appended to that error (another way to get what the user wanted).
    """

    def __init__(self, kind: str, *, valid_label: str = "valid", hint: str = "") -> None:
        self.kind, self.valid_label, self.hint = kind, valid_label, hint
        self._items: dict[str, T] = {}

    def register(self, item: T) -> T:
        """Add ``item``.

        Raises:
            ValueError: The name is taken.
        """
        name = item.name  # type: ignore[attr-defined]
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """The item called ``name``.

        Raises:
            UserInputError: Unknown name; the message lists the valid names.
        """
        try:
            return self._items[name]
        except KeyError:
            raise UserInputError(
                f"unknown {self.kind} {name!r}; {self.valid_label}: {', '.join(sorted(self._items))}{self.hint}"
            ) from None

    def unregister(self, name: str) -> T:
        """Remove and return the item called ``name`` (a plugin's or a test's registration undone).

        Raises:
            UserInputError: Unknown name; the message lists the valid names.
        """
        item = self.get(name)
        del self._items[name]
        return item

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def all(self) -> list[T]:
        """Registered items, sorted by name."""
        return [self._items[k] for k in sorted(self._items)]
