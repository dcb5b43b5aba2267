try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("napari-slip")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
