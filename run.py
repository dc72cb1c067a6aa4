"""LLM Engine Foundry command line: a thin entry point; the commands live in cli/ (`python run.py --help`)."""

from cli.environment import prepare_environment

prepare_environment()  # before anything imports zenml: it reads its config path at import

from cli import cli  # noqa: E402

if __name__ == "__main__":
    cli()
