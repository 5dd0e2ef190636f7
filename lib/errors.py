"""The errors an operator can meet, each with a hint, and the one table of exit codes.

Every program (both syncs and the executor) maps an error to its exit code through
`exit_code_for`, so the codes in README.md and `--help` have one source.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error we expect; carries a one-line hint that says what to do."""

    default_hint = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


class ConfigError(AgentError):
    default_hint = "Check the variable in the environment, the .env file or the command-line flag."


class AuthError(AgentError):
    default_hint = "Check the user name and password (or token) and that the account is not locked."


class ConnectivityError(AgentError):
    default_hint = "Check the host name, the port and that a firewall lets this machine reach it."


class TLSError(ConnectivityError):
    default_hint = "Provide the CA certificate bundle, or turn verification off for this endpoint."


class ConnectRefusedError(ConnectivityError):
    default_hint = "Nothing listens on that port: check the port and that the service is running."


class DNSError(ConnectivityError):
    default_hint = "The host name does not resolve: check the spelling or use an IP address."


class RequestTimeoutError(ConnectivityError):
    default_hint = "The service did not answer in time: check it is up and not overloaded."


class RemoteError(AgentError):
    """The remote service answered with an error of its own."""

    default_hint = "The remote service reported an error: see its message, then its own logs."

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status: int | None = None,
        code: str | None = None,
        remote_message: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code
        self.remote_message = remote_message


class PartialError(AgentError):
    default_hint = "Some items failed and the rest was saved: see the report for each failure."


class CancelledError(AgentError):
    default_hint = "The run was interrupted or cancelled; run it again when ready."


EXIT_OK = 0
EXIT_CODES: dict[type[BaseException], int] = {
    PartialError: 1,
    ConfigError: 2,
    AuthError: 3,
    ConnectivityError: 4,
    RemoteError: 5,
    CancelledError: 130,
    KeyboardInterrupt: 130,
}
EXIT_UNEXPECTED = 70  # a bug of ours, not an operator's problem (EX_SOFTWARE)

EXIT_CODE_MEANINGS: dict[int, str] = {
    0: "success",
    1: "partial: some items failed, the rest was saved",
    2: "configuration error",
    3: "authentication failed",
    4: "connection or TLS failure",
    5: "remote service error",
    70: "unexpected internal error (a bug: run with --debug and report it)",
    130: "interrupted (Ctrl-C, SIGTERM) or cancelled",
}


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an exception, walking its class hierarchy through EXIT_CODES."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_UNEXPECTED


def exit_codes_help() -> str:
    """The exit-code table as text, for --help epilogs."""
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODE_MEANINGS.items())
