"""``python -m fs2_semionline.data.prepare``: the ``fs2-semionline data`` command."""

from fs2_semionline.data.prepare import main

if __name__ == "__main__":
    main()
