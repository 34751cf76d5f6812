"""Go tools of the test suite: `crane` and `regctl` (what consumers of our images run) and
`referrers_registry/`, go-containerregistry's registry with the OCI 1.1 referrers API, a
second real registry next to Debian's docker-registry 2.8 (which has none).

All three are built from Go modules by devtools/gotools.py and cached outside the clone,
under ~/.cache/multiarch-builder/gotools/ (a CI run on a fresh clone of the same machine
reuses them); `fixtures.py` gives them to tests, registered once in tests/conftest.py.
"""
