"""The ``gpnas`` command line: a thin layer over the library.

Commands are imported lazily, so ``gpnas predictors ...`` never pays for
importing torch, and ``gpnas --help`` stays fast. Library errors
(``GpnasError``) become one line on stderr and a non-zero exit: 2 for a bad
configuration or option value, 1 for anything else the user can fix; so do
OSErrors (a missing, unreadable or full file system), with the path. Every
message is made printable first (it may quote a file's strings), and a closed
stdout (``gpnas show RUN | head``) ends the printing quietly, exit 0.

The top of the import order: it may import every other part, and it is the
only part that imports click or prints.
"""

import importlib
import sys
import textwrap

import click

from gpnas import __version__
from gpnas.cli.output import is_broken_pipe, printable, silence_stdout
from gpnas.errors import ConfigError, GpnasError

# command name -> "module:attribute" of a click command or group
COMMANDS = {
    "data": "gpnas.cli.train:data_command",
    "train": "gpnas.cli.train:train_command",
    "predictors": "gpnas.cli.predictors:predictors",
    "curves": "gpnas.cli.curves:curves",
    "evolve": "gpnas.cli.evolve:evolve_command",
    "show": "gpnas.cli.evolve:show_command",
    "ablate": "gpnas.cli.ablate:ablate_command",
    "table": "gpnas.cli.table:table",
}
# command name -> the first sentence of its help, which `gpnas --help` shortens to fit the terminal as
# click does, so the list imports no command (torch, sympy, scipy: about 1.5 s); tests/cli/test_cli_user.py
# checks it against each command's docstring
SHORT_HELP = {
    "ablate": "Compare every mode with baseline, random search, successive halving and regularized evolution "
              "at the same budget of training FLOPs (6 N + 12 L H Q T per token, nanoGPT's estimate_mfu), "
              "over several seeds.",
    "curves": "Write learning curves as curve files, for `gpnas predictors fit`.",
    "data": "Show where the text comes from, its hash status, vocabulary and split sizes.",
    "evolve": "Co-evolve architectures and learning-curve predictors.",
    "predictors": "Evolve learning-curve predictors (females) and use them on curve files.",
    "show": "Print the summary of a finished run again (or write its report.html).",
    "table": "Tables of recorded curves: replay whole searches in seconds (evolve --table, ablate --table).",
    "train": "Train one architecture on shakespeare_char and report its learning curve and metrics.",
}


class UserError(click.ClickException):
    """A GpnasError on its way out: one line, the exit code of its kind."""

    def __init__(self, error: GpnasError):
        super().__init__(printable(error))
        self.exit_code = 2 if isinstance(error, ConfigError) else 1


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def __init__(self, *args, lazy_commands=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def format_commands(self, ctx, formatter):
        """The command list of ``--help`` from SHORT_HELP, without importing a command."""
        names = self.list_commands(ctx)
        if names:
            limit = formatter.width - 6 - max(len(name) for name in names)  # click's own Group.format_commands
            rows = [(name, textwrap.shorten(SHORT_HELP.get(name, ""), max(limit, 10), placeholder="..."))
                    for name in names]
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx, name):
        if name in self.lazy_commands:
            module_name, attribute = self.lazy_commands[name].split(":")
            return getattr(importlib.import_module(module_name), attribute)
        return super().get_command(ctx, name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GpnasError as error:
            raise UserError(error) from None
        except click.ClickException as error:
            error.message = printable(error.message)
            raise
        except OSError as error:  # a folder or file the environment refuses: one line, not a traceback
            if is_broken_pipe(error):  # the reader went away (| head): stop printing, quietly
                silence_stdout()
                sys.exit(0)
            where = f"{error.filename}: " if error.filename else ""
            raise click.ClickException(printable(f"{where}{error.strerror or error}; check the path, its "
                                                 "permissions and the free space")) from None


@click.group(cls=LazyGroup, lazy_commands=COMMANDS)
@click.version_option(__version__, prog_name="gpnas")
def main():
    """gpnas: co-evolve transformer architectures and learning-curve predictors.

    \b
    Start with:  gpnas evolve --generations 20
    One model:   gpnas train --n-layer 4 --n-head 4 --n-embd 128
    Predictors:  gpnas predictors fit --curves curves.jsonl --out pred/
    """
