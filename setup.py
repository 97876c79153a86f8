from setuptools import find_packages, setup

setup(
    name="heliox_orchestration",
    version="0.1.0",
    description="Heliox: GPU cost alerting for Slack, orchestrated by Dagster.",
    packages=find_packages(exclude=["heliox_orchestration_tests*", "benchmarks*"]),
    python_requires=">=3.11",
    # dagster-postgres trails dagster: pin the matching triple, or pip backtracks to a 2021 release.
    install_requires=[
        "dagster==1.13.27",
        "dagster-webserver==1.13.27",
        "dagster-postgres==0.29.27",
        "pandas==3.1.1",
        "pyarrow==26.0.1",
        "sqlalchemy==2.1.9",
        "slack-sdk==3.48.0",
        "psycopg2-binary==2.9.13",
        "click==8.5.1",
    ],
    extras_require={
        "dev": [
            "pytest==9.2.0",
            "pytest-timeout==2.4.0",
            "pytest-xdist==3.8.0",
            "ruff==0.17.6",
            "mypy==2.4.1",
            "pandas-stubs",
            "types-PyYAML",
            "types-psycopg2",
        ],
    },
    entry_points={"console_scripts": ["heliox=heliox_orchestration.cli:main"]},
)
