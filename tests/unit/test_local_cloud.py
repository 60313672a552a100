"""The local cloud says plainly what a machine lacks instead of failing obscurely."""

from __future__ import annotations

import os

from cloudmirror.local import gcp


def test_missing_pubsub_emulator_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDSDK_ROOT_DIR", str(tmp_path))  # an SDK root without the emulator
    reason = gcp.pubsub_unavailable()
    assert reason and "Pub/Sub emulator is not installed" in reason and "pubsub-emulator" in reason


def test_missing_java_is_named(monkeypatch, tmp_path):
    exe = tmp_path / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    monkeypatch.setenv("CLOUDSDK_ROOT_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    assert "needs Java" in gcp.pubsub_unavailable()


def test_ci_has_what_the_gcs_event_tests_need():
    assert "fake-gcs-server" in gcp.fake_gcs_server_bin()
    if os.environ.get("CI"):  # elsewhere the GCS event tests skip with the reason; in CI they must run
        assert gcp.pubsub_unavailable() is None
