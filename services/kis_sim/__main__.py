"""Start the local KIS server: ``python -m services.kis_sim [options]`` (the same as ``trader kis-sim``)."""

from services.cli.kis_sim import app

if __name__ == "__main__":
    app(prog_name="python -m services.kis_sim")
