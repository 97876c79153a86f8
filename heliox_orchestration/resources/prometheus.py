"""Prometheus (NVIDIA DCGM exporter metrics) as a Dagster resource.

Present only when ``PROMETHEUS_URL`` is set. Every field comes through ``EnvVar`` (the URL too:
it names an internal host), so no value reaches run config, the launchpad or Dagster's storage;
the UI shows the variable names. Logs name the server through ``PrometheusClient.describe``
(token as ``****...wxyz``, password as ``****``) and every error is scrubbed of both."""

from __future__ import annotations

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from heliox_orchestration.ingest.prometheus import (
    BEARER_TOKEN_VAR,
    PASSWORD_VAR,
    URL_VAR,
    USERNAME_VAR,
    PrometheusClient,
)
from heliox_orchestration.resources import env_secret


class PrometheusSource(ConfigurableResource):
    """The Prometheus server holding DCGM exporter metrics, and its credentials."""

    url: str = Field(description="PROMETHEUS_URL: the server's base URL.")
    bearer_token: str | None = Field(default=None, description="PROMETHEUS_BEARER_TOKEN. Secret.")
    username: str | None = Field(default=None, description="PROMETHEUS_USERNAME (basic auth).")
    password: str | None = Field(default=None, description="PROMETHEUS_PASSWORD (basic auth). Secret.")

    @classmethod
    def from_environment(cls) -> PrometheusSource:
        """Every field as an ``EnvVar`` of a variable that is set (an unset one stays None)."""
        return cls(
            url=EnvVar(URL_VAR),
            bearer_token=env_secret(BEARER_TOKEN_VAR),
            username=env_secret(USERNAME_VAR),
            password=env_secret(PASSWORD_VAR),
        )

    def client(self) -> PrometheusClient:
        """A client of the server (close it, or use it in a ``with`` block)."""
        return PrometheusClient(
            self.url, bearer_token=self.bearer_token, username=self.username, password=self.password
        )
