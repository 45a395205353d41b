"""Writes the reference fixtures (assets/fixtures/) with PyTorch's own ops: the package
tools/fixtures/ (its __init__ describes the files' layout). Runs in the tool venv with the full
torch==2.13.0 (see environment.md); `make test` does not need it, it reads the committed files.
`make fixtures` runs it.
"""

from fixtures.main import main

if __name__ == "__main__":
    main()
