from setuptools import find_packages, setup


def _lines(path):
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip() and not line.startswith("#")]


setup(
    name="yagi-meter",
    version="0.1.0",
    description="Archive every OpenStack notification in Redis and serve it back as Atom",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["yagi_meter", "yagi_meter.*", "feeds", "feeds.*"]),
    package_data={"yagi_meter.store": ["*.lua"], "feeds": ["static/*"]},
    install_requires=_lines("requirements.txt"),
    extras_require={"test": _lines("requirements-test.txt")},
    entry_points={"console_scripts": ["yagi-meter = yagi_meter.cli:main"]},
)
