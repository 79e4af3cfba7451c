#!/usr/bin/env python3
"""Where a wasm binary's code goes, by crate: sums each function body's size under the first
crate name in its (mangled) name, from the binary's name section. Use the binary cargo links,
before wasm-opt strips the names:

    python3 scripts/wasm-code-size.py "$CARGO_TARGET_DIR/wasm32-unknown-unknown/web/goalrank.wasm"
"""
import collections
import re
import sys


def leb(data, i):
    """An unsigned LEB128 number at `i`, and the offset after it."""
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def sections(data):
    """Section id (or a custom section's name) -> (start, end) of its payload."""
    found, i = {}, 8
    while i < len(data):
        sid = data[i]
        size, i = leb(data, i + 1)
        if sid == 0:
            length, j = leb(data, i)
            found[data[j:j + length].decode()] = (j + length, i + size)
        else:
            found[sid] = (i, i + size)
        i += size
    return found


def imported_functions(data, start):
    """How many functions the import section declares (they come first in the index space)."""
    count, i = leb(data, start)
    functions = 0
    for _ in range(count):
        for _ in range(2):  # module and field names
            length, i = leb(data, i)
            i += length
        kind = data[i]
        i += 1
        if kind == 0:  # function: type index
            _, i = leb(data, i)
            functions += 1
        elif kind == 1:  # table: element type, limits
            flags = data[i + 1]
            _, i = leb(data, i + 2)
            if flags & 1:
                _, i = leb(data, i)
        elif kind == 2:  # memory: limits
            flags = data[i]
            _, i = leb(data, i + 1)
            if flags & 1:
                _, i = leb(data, i)
        elif kind == 3:  # global: value type, mutability
            i += 2
    return functions


def main(path):
    data = open(path, "rb").read()
    found = sections(data)
    if "name" not in found:
        sys.exit(f"{path}: no name section (run it on the binary before wasm-opt)")
    imports = imported_functions(data, found[2][0]) if 2 in found else 0
    count, i = leb(data, found[10][0])
    sizes = []
    for _ in range(count):
        size, i = leb(data, i)
        sizes.append(size)
        i += size
    names = {}
    i, end = found["name"]
    while i < end:
        sub = data[i]
        size, i = leb(data, i + 1)
        if sub == 1:  # function names
            n, j = leb(data, i)
            for _ in range(n):
                index, j = leb(data, j)
                length, j = leb(data, j)
                names[index] = data[j:j + length].decode("utf-8", "replace")
                j += length
        i += size
    by_crate = collections.Counter()
    for index, size in enumerate(sizes):
        name = names.get(index + imports, "?")
        m = re.search(r"^_ZN\d+(?:_\$LT\$)?([A-Za-z_][A-Za-z0-9_]*?)(?:\.\.|\d|$)", name) or re.search(
            r"([a-z_][a-z0-9_]*)::", name)
        by_crate[m.group(1) if m else name[:30]] += size
    print(f"{path}: {sum(sizes) / 1e6:.1f} MB of code")
    for crate, size in by_crate.most_common(25):
        print(f"{size / 1e6:7.2f} MB  {crate}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else sys.exit(__doc__))
