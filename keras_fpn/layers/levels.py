"""Level keys: a map at stride 2^l is called `C{l}` (backbone) or `P{l}` (pyramid); levels are ints in code."""

import re


def level_key(prefix, level):
    """`level_key("P", 3) == "P3"`."""
    return f"{prefix}{int(level)}"


def levels_of(keys, prefix, argument="inputs"):
    """Returns the sorted int levels of dict `keys` named `{prefix}{level}`, checking they are contiguous.

    Raises:
        ValueError: naming the offending key, if a key is not of the form `{prefix}{int}`, or if the levels skip
            one (`C3, C5`).
    """
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)$")
    levels = []
    for key in keys:
        match = pattern.match(str(key))
        if match is None:
            raise ValueError(
                f"Received {argument} key {key!r}; expected keys '{prefix}<level>' such as '{prefix}3' "
                f"(level = log2 of the stride). Received keys: {sorted(map(str, keys))}."
            )
        levels.append(int(match.group(1)))
    if not levels:
        raise ValueError(f"Received empty {argument}; expected a dict of maps keyed '{prefix}<level>'.")
    levels.sort()
    if levels != list(range(levels[0], levels[-1] + 1)):
        raise ValueError(
            f"Received {argument} levels {levels}; expected contiguous levels (each map half the size of the "
            "previous one), e.g. [3, 4, 5]."
        )
    return levels
