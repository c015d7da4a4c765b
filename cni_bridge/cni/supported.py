"""The CNI versions this plugin speaks, with no imports: the VERSION answer needs nothing else."""

SUPPORTED_VERSIONS: tuple[str, ...] = (
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
)
CURRENT_VERSION = "1.1.0"


def version_answer() -> bytes:
    """The VERSION result, byte for byte what ``json.dumps`` with compact separators gives
    (the strings need no escaping)."""
    versions = ",".join(f'"{v}"' for v in SUPPORTED_VERSIONS)
    return f'{{"cniVersion":"{CURRENT_VERSION}","supportedVersions":[{versions}]}}\n'.encode()
