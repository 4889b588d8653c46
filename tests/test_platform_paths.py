"""Where mcp-guard looks and writes on each OS: the policy discovery's config directory, Claude Desktop's
config (wrap), the limit store's state file, and how the server command is found. Pure functions, given
the environment and the platform."""

from __future__ import annotations

import os
import sys

import pytest

from mcp_guard import oslayer
from mcp_guard.commandline import policy_places, user_config_dir
from mcp_guard.limitstore import default_url
from mcp_guard.wrap import default_config_path

WINDOWS_ENV = {"APPDATA": r"C:\Users\ada\AppData\Roaming", "LOCALAPPDATA": r"C:\Users\ada\AppData\Local",
               "USERPROFILE": r"C:\Users\ada"}


def test_windows_uses_appdata_for_the_config_and_localappdata_for_the_state():
    assert user_config_dir(WINDOWS_ENV, "win32") == os.path.join(WINDOWS_ENV["APPDATA"], "mcp-guard")
    assert default_config_path(WINDOWS_ENV, "win32") == os.path.join(WINDOWS_ENV["APPDATA"], "Claude",
                                                                      "claude_desktop_config.json")
    assert default_url(WINDOWS_ENV, "win32") == "sqlite:///C:/Users/ada/AppData/Local/mcp-guard/state.db"
    assert policy_places(WINDOWS_ENV, "win32")[-1] == os.path.join(WINDOWS_ENV["APPDATA"], "mcp-guard", "policy.yml")


def test_windows_without_the_variables_falls_back_to_the_profile():
    env = {"USERPROFILE": r"C:\Users\ada"}
    assert default_url(env, "win32") == "sqlite:///C:/Users/ada/AppData/Local/mcp-guard/state.db"


def test_macos_uses_application_support():
    env = {"HOME": "/Users/ada"}
    assert user_config_dir(env, "darwin") == "/Users/ada/Library/Application Support/mcp-guard"
    assert default_config_path(env, "darwin") == ("/Users/ada/Library/Application Support/Claude/"
                                                  "claude_desktop_config.json")
    assert default_url(env, "darwin") == "sqlite:///Users/ada/Library/Application Support/mcp-guard/state.db"


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
def test_an_absolute_xdg_config_home_is_honoured_everywhere_a_relative_one_nowhere(platform):
    env = {"HOME": "/home/ada", "XDG_CONFIG_HOME": "/cfg", **WINDOWS_ENV}
    assert user_config_dir(env, platform) == os.path.join("/cfg", "mcp-guard")
    relative = {**env, "XDG_CONFIG_HOME": "cfg"}
    assert user_config_dir(relative, platform) != os.path.join("cfg", "mcp-guard")


def test_linux_follows_xdg():
    env = {"HOME": "/home/ada"}
    assert user_config_dir(env, "linux") == "/home/ada/.config/mcp-guard"
    assert default_url(env, "linux") == "sqlite:///home/ada/.local/state/mcp-guard/state.db"
    assert default_url({**env, "XDG_STATE_HOME": "/state"}, "linux") == "sqlite:///state/mcp-guard/state.db"
    assert default_url({**env, "XDG_STATE_HOME": "rel"}, "linux") == "sqlite:///home/ada/.local/state/mcp-guard/state.db"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX: the program is left for execvp to find")
def test_the_server_command_is_found_on_path_or_refused():
    assert oslayer.resolve_program(["sh", "-c", "true"]) == ["sh", "-c", "true"]
    assert oslayer.resolve_program(["no-such-command-mcp-guard-xyz"]) is None
    assert oslayer.resolve_program(["./bin/server"]) == ["./bin/server"]
