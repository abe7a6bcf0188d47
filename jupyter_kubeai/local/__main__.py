"""``python -m jupyter_kubeai.local login-help``: how to log in to the local hub."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..hubconfig import DEMO_GROUPS, DEMO_USERS, state_dir_for
from .auth import PASSWORD_FILE_NAME, read_or_create_password


def login_help(project_dir: Path, url: str = "http://127.0.0.1:8000") -> str:
    password = read_or_create_password(state_dir_for(project_dir) / PASSWORD_FILE_NAME)
    users = ", ".join(f"{name} (hub admin)" if admin else name for name, admin in DEMO_USERS.items())
    projects = "; ".join(f"{group}: {', '.join(members)}" for group, members in DEMO_GROUPS.items())
    return (
        f"\n  jupyter_kubeai (local mode) starts at {url}\n"
        f"  Log in as one of: {users}\n"
        f"  Password: {password}\n"
        f"  Projects: {projects}\n"
        f"  Stop with Ctrl-C.\n"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jupyter_kubeai.local")
    parser.add_argument("command", choices=["login-help"])
    parser.add_argument("--project-dir", default=".", type=Path)
    args = parser.parse_args(argv)
    print(login_help(args.project_dir))


if __name__ == "__main__":
    main()
