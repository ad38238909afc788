"""The session's corpus of real replicas: each built once, on first use, on the session's S3 server.

Import the fixture into a test module (`from tests.corpus_fixtures import corpus  # noqa: F401`).
"""

from __future__ import annotations

import pytest

from drillbook.testing.corpus import Corpus


@pytest.fixture(scope="session")
def corpus(s3_endpoint, tmp_path_factory) -> Corpus:
    return Corpus(s3_endpoint, "drills", tmp_path_factory.mktemp("corpus"))
