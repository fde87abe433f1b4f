"""Scripts the readiness checks run inside a task (`python3 -c`), read as text: never imported here."""

from importlib.resources import files


def script(name: str) -> str:
    return files(__package__).joinpath(f"{name}.py").read_text()
