#!/usr/bin/env bash
# `make prometheus-rule`: writes deploy/kubernetes/prometheus-operator/prometheusrule.yaml, the
# Prometheus Operator's form of deploy/prometheus/alerts.yml (the same groups under spec:).
# Run it after editing alerts.yml; crates/relay/tests/it/deploy_kubernetes.rs fails until the two agree.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
alerts="$root/deploy/prometheus/alerts.yml"
out="$root/deploy/kubernetes/prometheus-operator/prometheusrule.yaml"
{
  cat <<'HEAD'
# GENERATED from deploy/prometheus/alerts.yml by `make prometheus-rule`; edit alerts.yml instead.
# The Relay alerts for the Prometheus Operator. Your Prometheus selects PrometheusRules by label
# (kube-prometheus-stack: release: <its release name>); set the label below to what yours selects.
# The rules expect the job, outbox and instance labels that servicemonitor.yaml sets.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: relay
  namespace: relay
  labels: { app.kubernetes.io/part-of: relay, release: prometheus }
spec:
HEAD
  # alerts.yml's top level (groups:) becomes spec's: every non-empty line two spaces deeper.
  sed -e 's/^\(.\)/  \1/' "$alerts"
} >"$out.tmp"
mv "$out.tmp" "$out"
echo "wrote ${out#"$root"/}" >&2
