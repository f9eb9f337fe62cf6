"""Import paddle without its import-time "No ccache found" warning (it only concerns C++ extensions).

A filter cannot do it: importing paddle itself installs ``simplefilter("always")`` in front of the
user's filters. So the import runs with warnings recorded, and all but that one are shown again.
"""
import warnings


def import_paddle() -> None:
    with warnings.catch_warnings(record=True) as caught:
        import paddle  # noqa: F401
    for w in caught:
        if "No ccache found" not in str(w.message):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
