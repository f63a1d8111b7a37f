"""Build the offline page for ``dvc plots show`` / ``dvc plots diff``: DVC's HTML template with vega, vega-lite
and vega-embed inlined.

DVC's default page loads the three libraries from a CDN, so with no network (most NPU labs, CI runners) the
browser draws nothing. ``make setup`` runs this module once: it downloads the npm packages pinned below from the
npm registry, checks each tarball against the pinned sha512 integrity (the registry's own ``dist.integrity``)
before using it, takes their minified UMD builds and writes ``.dvc/plots/offline.html``, which ``.dvc/config``
names as ``plots.html_template``. Showing a page then fetches nothing.

    python -m whisper_npu.vega_page --out .dvc/plots/offline.html
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import tarfile
import urllib.request
from pathlib import Path

# (package, version, npm dist.integrity, file in the package). The newest releases with UMD builds of the
# major versions DVC's own page loads (vega 5, vega-lite 5, vega-embed 6); vega-lite >= 5.2 for xOffset,
# which .dvc/plots/grouped_bars.json uses.
PACKAGES = (
    ("vega", "5.33.0",
     "sha512-jNAGa7TxLojOpMMMrKMXXBos4K6AaLJbCgGDOw1YEkLRjUkh12pcf65J2lMSdEHjcEK47XXjKiOUVZ8L+MniBA==",
     "build/vega.min.js"),
    ("vega-lite", "5.23.0",
     "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
     "build/vega-lite.min.js"),
    ("vega-embed", "6.29.0",
     "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
     "build/vega-embed.min.js"),
)

# DVC's page (dvc_render.html.PAGE_HTML) with the libraries inline in place of {scripts}: without a {scripts}
# placeholder DVC adds no CDN <script> tags. {refresh_tag} and {plot_divs} are DVC's placeholders.
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- {versions}: inlined by whisper_npu/vega_page.py, no network needed -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


class PageError(RuntimeError):
    """A package could not be fetched or failed its integrity check."""


def integrity(data: bytes) -> str:
    """npm's Subresource Integrity string of a tarball (sha512, base64)."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch(name: str, version: str, expected: str, registry: str) -> bytes:
    url = f"{registry.rstrip('/')}/{name}/-/{name}-{version}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            data = r.read()
    except OSError as e:
        raise PageError(f"{url}: cannot download ({e})") from None
    if integrity(data) != expected:
        raise PageError(f"{url}: integrity {integrity(data)} is not the pinned {expected}")
    return data


def script(tarball: bytes, member: str, name: str) -> str:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        js = tar.extractfile(f"package/{member}").read().decode("utf-8")
    # Inline code must not close its <script> element or contain one of DVC's placeholders.
    for bad in ("</script", "{plot_divs}", "{scripts}", "{refresh_tag}"):
        if bad in js:
            raise PageError(f"{name}/{member}: contains {bad!r}; it cannot be inlined")
    return f"    <script>/* {name} */\n{js}\n    </script>"


def build_page(registry: str) -> str:
    scripts = [script(fetch(n, v, i, registry), m, f"{n}@{v}") for n, v, i, m in PACKAGES]
    versions = ", ".join(f"{n}@{v}" for n, v, _, _ in PACKAGES)
    return PAGE.format(versions=versions, scripts="\n".join(scripts))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--registry", default=os.environ.get("npm_config_registry", "https://registry.npmjs.org"),
                        help="npm registry (default: $npm_config_registry or registry.npmjs.org)")
    args = parser.parse_args(argv)
    try:
        page = build_page(args.registry)
    except PageError as e:
        raise SystemExit(f"error: {e}") from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp-{os.getpid()}")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
