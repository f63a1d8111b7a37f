"""Share results through DVC remotes: a local folder and an S3-compatible server (moto) on loopback.

Round trip through the real `dvc` CLI: run the tiny profile, push, clone the repo fresh, pull, `dvc status`
clean and every output byte-identical; a push that died during its upload completes when re-run; an object
corrupted in the remote is detected (remotes are configured with `verify = true`, as the README says) instead of
used. A push interrupted while DVC is still collecting what to push is an upstream failure (dvc-data 3.18.3):
the test below pins it and the recovery docs/experiments.md gives.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import VENV_BIN, assert_status_clean, run
from test_experiments import assert_bars_drawn, exp_rows, param

pytestmark = pytest.mark.slow

OUTPUTS = ("models/reference", "data", "calibration", "compiled")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on 127.0.0.1 with one bucket; yields (endpoint, bucket, credentials env)."""
    port = _free_port()
    proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        import boto3

        deadline = time.time() + 30
        while True:
            try:
                boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                             aws_access_key_id="testing",
                             aws_secret_access_key="testing").create_bucket(Bucket="whisper-npu")
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        yield endpoint, "whisper-npu", creds
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _files(root: Path) -> dict[str, bytes]:
    out = {}
    for top in OUTPUTS:
        for p in sorted((root / top).rglob("*")):
            if p.is_file() and ".gitignore" not in p.name:
                out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def _add_remote(repo: Path, kind: str, tmp_path: Path, s3=None) -> dict:
    """Configure a default remote the way README documents it; return extra env for dvc calls."""
    if kind == "local":
        url = str(tmp_path / "remote-folder")
        run(["dvc", "remote", "add", "-d", "storage", url], repo)
        env = {}
    else:
        endpoint, bucket, creds = s3
        run(["dvc", "remote", "add", "-d", "storage", f"s3://{bucket}/{tmp_path.name}"], repo)
        run(["dvc", "remote", "modify", "storage", "endpointurl", endpoint], repo)
        # secrets in .dvc/config.local (git-ignored), never in .dvc/config
        run(["dvc", "remote", "modify", "--local", "storage", "access_key_id", creds["AWS_ACCESS_KEY_ID"]], repo)
        run(["dvc", "remote", "modify", "--local", "storage", "secret_access_key", creds["AWS_SECRET_ACCESS_KEY"]],
            repo)
        env = {"AWS_DEFAULT_REGION": "us-east-1"}
    run(["dvc", "remote", "modify", "storage", "verify", "true"], repo)
    return env


def _remote_objects(repo: Path, kind: str, tmp_path: Path, s3=None) -> list:
    if kind == "local":
        return sorted(p for p in (tmp_path / "remote-folder").rglob("*") if p.is_file())
    import boto3

    endpoint, bucket, creds = s3
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=tmp_path.name + "/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def _delete_objects(objs: list, kind: str, s3=None) -> None:
    if kind == "local":
        for p in objs:
            p.chmod(0o644)
            p.unlink()
        return
    import boto3

    endpoint, bucket, creds = s3
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])
    for key in objs:
        client.delete_object(Bucket=bucket, Key=key)


def _corrupt(obj, kind: str, s3=None) -> None:
    if kind == "local":
        obj.chmod(0o644)
        data = bytearray(obj.read_bytes())
        data[len(data) // 2] ^= 0xFF
        obj.write_bytes(bytes(data))
        return
    import boto3

    endpoint, bucket, creds = s3
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])
    data = bytearray(client.get_object(Bucket=bucket, Key=obj)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    client.put_object(Bucket=bucket, Key=obj, Body=bytes(data))


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_push_clone_pull_round_trip(kind, tiny_pipeline, tmp_path, request):
    s3 = request.getfixturevalue("s3_server") if kind == "s3" else None
    repo = tmp_path / "origin"
    shutil.copytree(tiny_pipeline, repo, symlinks=True)
    env = _add_remote(repo, kind, tmp_path, s3)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "remote"], repo)
    assert "secret_access_key" not in (repo / ".dvc" / "config").read_text()

    # A push that died half way through its upload leaves some file objects and none of the directory manifests
    # (.dir, which DVC uploads last): push fully, then make the remote exactly that partial. The re-run must complete.
    # (A push interrupted while still "Collecting" is a different, upstream failure: see the test below.)
    run(["dvc", "push"], repo, env=env)
    objs = _remote_objects(repo, kind, tmp_path, s3)
    _delete_objects([o for i, o in enumerate(objs) if str(o).endswith(".dir") or i % 2], kind, s3)
    assert len(_remote_objects(repo, kind, tmp_path, s3)) < len(objs)
    run(["dvc", "push"], repo, env=env)
    status = run(["dvc", "status", "--cloud"], repo, env=env).stdout
    assert "in sync" in status, status

    # Fresh clone, pull: identical bytes, clean status.
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    if kind == "s3":
        shutil.copy2(repo / ".dvc" / "config.local", clone / ".dvc" / "config.local")
    run(["dvc", "pull"], clone, env=env)
    assert_status_clean(clone, env)
    assert _files(clone) == _files(repo)

    # Corrupt one object in the remote: a fresh pull must fail loudly, not check out bad bytes.
    objs = [o for o in _remote_objects(repo, kind, tmp_path, s3) if not str(o).endswith(".dir")]
    _corrupt(objs[0], kind, s3)
    again = tmp_path / "clone2"
    run(["git", "clone", "-q", str(repo), str(again)], tmp_path)
    if kind == "s3":
        shutil.copy2(repo / ".dvc" / "config.local", again / ".dvc" / "config.local")
    pulled = run(["dvc", "pull"], again, check=False, env=env)
    assert pulled.returncode != 0, pulled.stdout + pulled.stderr
    # whatever did get checked out is correct: no file differs from the original
    original = _files(repo)
    for name, data in _files(again).items():
        assert data == original[name], f"{name} was checked out corrupted"


# Ctrl-C, exactly where dvc-data's collect() stores its per-output results: after the first output's, before the
# second's. The interrupt is the real KeyboardInterrupt DVC's CLI handles; only its moment is chosen.
_PUSH_INTERRUPTED_WHILE_COLLECTING = """
import sys
import dvc_data.index.collect as collect
from dvc.cli import main
calls, original = [], collect._collect_from_index
def interrupted(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        raise KeyboardInterrupt
    return original(*args, **kwargs)
collect._collect_from_index = interrupted
sys.exit(main(["push"]))
"""


def test_push_interrupted_while_collecting_needs_a_fresh_collection(tmp_path):
    """Upstream failure (dvc 3.67.1, dvc-data 3.18.3), documented in docs/experiments.md: `dvc push` stores its
    collection of what to push, output by output, in DVC's site cache, keyed by the data it pushes; interrupted
    after the first output, that partial collection is trusted by the next push of the same data, which exits 0
    with outputs missing from the remote. `dvc status -c` shows it; a push with a fresh site cache
    (`DVC_SITE_CACHE_DIR=$(mktemp -d) dvc push`) completes it. If a DVC upgrade fixes this, the assertion on the
    re-push's status fails: then drop the recovery note."""
    repo = tmp_path / "repo"
    repo.mkdir()
    site = {"DVC_SITE_CACHE_DIR": str(tmp_path / "site")}  # this test's own, so nothing leaks to other runs
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    for d in "abc":
        (repo / d).mkdir()
        for i in range(3):
            (repo / d / f"f{i}").write_text(f"{d}{i}")
        run(["dvc", "add", "-q", d], repo, env=site)
    run(["dvc", "remote", "add", "-d", "storage", str(tmp_path / "remote")], repo)

    interrupted = run([sys.executable, "-c", _PUSH_INTERRUPTED_WHILE_COLLECTING], repo, check=False, env=site)
    assert interrupted.returncode != 0 and "interrupted" in interrupted.stderr, interrupted.stderr
    assert not (tmp_path / "remote").exists()  # nothing was uploaded: collection comes first
    run(["dvc", "push"], repo, env=site)  # exits 0 ...
    status = run(["dvc", "status", "--cloud"], repo, env=site).stdout
    assert "new:" in status, status  # ... and two of the three outputs are not on the remote

    run(["dvc", "push"], repo, env={"DVC_SITE_CACHE_DIR": str(tmp_path / "fresh-site")})
    status = run(["dvc", "status", "--cloud"], repo, env=site).stdout
    assert "in sync" in status, status
    assert len([f for f in (tmp_path / "remote").rglob("*") if f.is_file()]) == 12  # 9 files + 3 manifests


@pytest.mark.slow
def test_experiment_shared_through_git_and_dvc_remotes(tiny_pipeline, tmp_path):
    """README "Experiments" and "Share results": README's experiment, run on machine A is pushed (`dvc exp push`:
    git refs to a git remote, its outputs to the DVC remote); machine B pulls it (`dvc exp pull`), sees it in
    `dvc exp show` and gets its outputs byte-identical. Two clones of one bare git repository on disk stand for the
    two machines."""
    origin = tmp_path / "seed"
    shutil.copytree(tiny_pipeline, origin, symlinks=True)
    _add_remote(origin, "local", tmp_path)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-qm", "remote"], origin)
    bare = tmp_path / "shared.git"
    run(["git", "clone", "-q", "--bare", str(origin), str(bare)], tmp_path)
    run(["dvc", "push"], origin)  # the baseline's outputs, as a team's main branch has them

    machine_a, machine_b = tmp_path / "a", tmp_path / "b"
    for m in (machine_a, machine_b):
        run(["git", "clone", "-q", str(bare), str(m)], tmp_path)
        run(["git", "config", "user.email", "test@example.com"], m)
        run(["git", "config", "user.name", "test"], m)
    run(["dvc", "pull"], machine_a)
    # README "Experiments", as written: what reruns, `dvc exp show`, `dvc metrics diff`, `dvc plots diff`
    out = run(["dvc", "exp", "run", "-n", "ratio-0.5", "-S", "calibration.translate_ratio=0.5"], machine_a).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert {"calibrate_decoder", "compile@decoder"} <= ran, out
    # the default dynamic INT8 reads no calibration set: compiled/decoder comes out byte-identical, so no
    # transcription reruns (nor anything before the decoder set)
    assert not ran & {"calibrate_encoder", "compile@encoder", "audio@en_us", "label@en_us", "transcribe_fp32@en_us",
                      "transcribe_fp32@es_419", "mobilint_model", "transcribe_compiled", "score"}, out
    assert param(exp_rows(machine_a)["ratio-0.5"], "calibration.translate_ratio") == 0.5
    run(["dvc", "exp", "show", "--md", "--drop", ".*", "--keep",
         "Experiment|calibration.translate_ratio|summary.wer.(real|synthetic).(fp32|compiled|delta)"], machine_a)
    run(["dvc", "metrics", "diff"], machine_a)
    branch = run(["git", "branch", "--show-current"], machine_a).stdout.strip()
    run(["dvc", "plots", "diff", branch, "ratio-0.5", "-o", str(tmp_path / "diff")], machine_a)
    assert_bars_drawn(tmp_path / "diff", tmp_path, series=4)   # fp32 and compiled, at two revisions

    run(["dvc", "exp", "push", "origin", "ratio-0.5"], machine_a)

    listed = run(["dvc", "exp", "list", "origin"], machine_b).stdout
    assert "ratio-0.5" in listed, listed
    run(["dvc", "exp", "pull", "origin", "ratio-0.5"], machine_b)
    shown = run(["dvc", "exp", "show", "--md"], machine_b).stdout
    assert "ratio-0.5" in shown and "0.5" in shown, shown
    run(["dvc", "exp", "apply", "ratio-0.5"], machine_b)
    run(["dvc", "pull"], machine_b)   # its outputs come from the DVC remote (nothing was recomputed on B)
    run(["dvc", "exp", "apply", "ratio-0.5"], machine_a)
    assert_status_clean(machine_b)
    assert _files(machine_b) == _files(machine_a)
    assert "translate_ratio: 0.5" in (machine_b / "params.yaml").read_text()
