from . import run

if __name__ == "__main__":  # imported (by a documentation tool, pkgutil.walk_packages): no run
    run()
