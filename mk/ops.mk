# Deployment, monitoring and delivery (M4/M5).
# Local Kubernetes with kind (needs docker, kind and kubectl on the laptop):
#   make kind-full      create the cluster, build + load the image, deploy API + monitoring, test
#   make kind-down      delete the cluster
# API http://localhost:8000, Prometheus http://localhost:9090, Grafana http://localhost:3000
# (user admin, password: make grafana-password). docs/operations.md has the details.
KIND ?= kind
KUBECTL ?= kubectl
DOCKER ?= docker
IMAGE ?= catsdogs-api
KIND_CLUSTER ?= catsdogs
KIND_CONFIG ?= deploy/kind/kind-config.yaml
# The Kubernetes version the manifests are validated against (tests/ops: kubernetes-validate -k 1.30.0).
KIND_NODE_IMAGE ?= kindest/node:v1.30.4
KIND_CONTEXT ?= kind-$(KIND_CLUSTER)
# k8s-deploy / k8s-smoke-test: any cluster (empty K8S_CONTEXT = kubectl's current context).
K8S_CONTEXT ?=
K8S_OVERLAY ?= deploy/k8s/overlays/kind
K8S_NAMESPACE ?= mlops
MONITORING_DIR ?= deploy/monitoring
MONITORING_NAMESPACE ?= monitoring
ROLLOUT_TIMEOUT ?= 300s
# Image for k8s-deploy: empty = what the overlay says (catsdogs-api:<version>, loaded into kind).
DEPLOY_IMAGE ?=
# docker-push: REGISTRY=ghcr.io/<owner>; logs in first when $REGISTRY_TOKEN is set.
REGISTRY ?=
REGISTRY_USER ?= $(USER)
PUSH_LATEST ?= 0
BASE_URL ?= http://localhost:8000
SMOKE_LOCAL_PORT ?= 18080
GRAFANA_ADMIN_USER ?= admin
PROMETHEUS_URL ?= http://localhost:9090
GRAFANA_URL ?= http://localhost:3000
PROMETHEUS_IMAGE ?= prom/prometheus:v2.54.1
ALERTMANAGER_IMAGE ?= prom/alertmanager:v0.27.0

KIND_KUBECTL = $(KUBECTL) --context $(KIND_CONTEXT)
K8S_KUBECTL = $(KUBECTL)$(if $(K8S_CONTEXT), --context $(K8S_CONTEXT))
REGISTRY_HOST = $(firstword $(subst /, ,$(REGISTRY)))

.PHONY: kind-full kind-create kind-build kind-deploy kind-wait kind-up kind-down kind-status kind-logs \
	kind-test kind-restart monitoring-deploy monitoring-status monitoring-delete monitoring-check \
	prometheus-logs grafana-logs grafana-password k8s-deploy k8s-smoke-test docker-push smoke-test \
	test-ops ops-tools

##@ Local Kubernetes (kind)
kind-full: ## kind: create cluster, build + load image, deploy API + monitoring, wait, smoke test
	$(MAKE) kind-create
	$(MAKE) kind-build
	$(MAKE) kind-deploy
	$(MAKE) monitoring-deploy
	$(MAKE) kind-wait
	$(MAKE) kind-test

kind-up: ## kind: create cluster, build + load image, deploy the API (no monitoring)
	$(MAKE) kind-create
	$(MAKE) kind-build
	$(MAKE) kind-deploy

kind-create: ## kind: create the cluster KIND_CLUSTER (ports 8000/9090/3000 on localhost) unless it exists
	@if $(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
		echo "kind cluster $(KIND_CLUSTER) already exists"; \
	else \
		$(KIND) create cluster --name $(KIND_CLUSTER) --config $(KIND_CONFIG) --image $(KIND_NODE_IMAGE) --wait 180s; \
	fi

kind-build: docker-build ## kind: build the image and load IMAGE:<version> into the cluster (restarts running pods)
	@# The overlay's pinned tag is the package version (DOCKER_VERSION), whatever TAG says.
	$(KIND) load docker-image $(IMAGE):$(DOCKER_VERSION) --name $(KIND_CLUSTER)
	@# Same tag, new image: running pods only pick it up when restarted.
	@if $(KIND_KUBECTL) -n $(K8S_NAMESPACE) get deployment/catsdogs-api >/dev/null 2>&1; then \
		$(KIND_KUBECTL) -n $(K8S_NAMESPACE) rollout restart deployment/catsdogs-api; \
	fi

kind-deploy: ## kind: apply metrics-server and the kind overlay, wait for the rollout
	$(KIND_KUBECTL) apply -k deploy/kind/metrics-server
	$(KIND_KUBECTL) apply -k $(K8S_OVERLAY)
	$(KIND_KUBECTL) -n $(K8S_NAMESPACE) rollout status deployment/catsdogs-api --timeout=$(ROLLOUT_TIMEOUT)

kind-wait: ## kind: wait until the API, metrics-server and the monitoring stack are available
	$(KIND_KUBECTL) -n $(K8S_NAMESPACE) wait --for=condition=Available deployment --all --timeout=$(ROLLOUT_TIMEOUT)
	$(KIND_KUBECTL) -n kube-system wait --for=condition=Available deployment/metrics-server --timeout=$(ROLLOUT_TIMEOUT)
	$(KIND_KUBECTL) -n $(MONITORING_NAMESPACE) wait --for=condition=Available deployment --all --timeout=$(ROLLOUT_TIMEOUT)
	$(KIND_KUBECTL) -n $(MONITORING_NAMESPACE) rollout status daemonset/node-exporter --timeout=$(ROLLOUT_TIMEOUT)

kind-test: ## kind: smoke test one pod, the NodePort, Prometheus targets and the Grafana dashboard
	$(MAKE) k8s-smoke-test K8S_CONTEXT=$(KIND_CONTEXT)
	@# Through the NodePort (load-balanced over the pods): the counter check needs one pod, skip it.
	SMOKE_METRICS=0 deploy/smoke-test.sh $(BASE_URL)
	KUBECTL="$(KIND_KUBECTL)" MONITORING_NAMESPACE=$(MONITORING_NAMESPACE) PROMETHEUS_URL=$(PROMETHEUS_URL) \
		GRAFANA_URL=$(GRAFANA_URL) scripts/ops/check-monitoring.sh

kind-down: ## kind: delete the cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)

kind-status: ## kind: nodes, API and monitoring workloads, HPA, PDB
	$(KIND_KUBECTL) get nodes -o wide
	$(KIND_KUBECTL) -n $(K8S_NAMESPACE) get deployment,pods,service,hpa,pdb,configmap -o wide
	$(KIND_KUBECTL) -n $(MONITORING_NAMESPACE) get deployment,daemonset,pods,service

kind-logs: ## kind: last logs of every API pod
	$(KIND_KUBECTL) -n $(K8S_NAMESPACE) logs -l app.kubernetes.io/name=catsdogs-api --all-containers --prefix --tail=200

kind-restart: ## kind: rolling restart of the API (e.g. after kind-build) and wait for it
	$(KIND_KUBECTL) -n $(K8S_NAMESPACE) rollout restart deployment/catsdogs-api
	$(KIND_KUBECTL) -n $(K8S_NAMESPACE) rollout status deployment/catsdogs-api --timeout=$(ROLLOUT_TIMEOUT)

##@ Monitoring (Prometheus, Alertmanager, Grafana)
monitoring-deploy: ## kind: Prometheus, Alertmanager, Grafana, node-exporter, kube-state-metrics
	$(KIND_KUBECTL) apply -f $(MONITORING_DIR)/namespace.yaml
	@# Grafana's admin password lives only in the cluster: random unless GRAFANA_ADMIN_PASSWORD is given.
	@if [ -n "$$GRAFANA_ADMIN_PASSWORD" ] || ! $(KIND_KUBECTL) -n $(MONITORING_NAMESPACE) get secret grafana-admin >/dev/null 2>&1; then \
		password="$${GRAFANA_ADMIN_PASSWORD:-$$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24)}"; \
		printf '%s' "$$password" | $(KIND_KUBECTL) -n $(MONITORING_NAMESPACE) create secret generic grafana-admin \
			--from-literal=admin-user=$(GRAFANA_ADMIN_USER) --from-file=admin-password=/dev/stdin \
			--dry-run=client -o yaml | $(KIND_KUBECTL) apply -f -; \
		echo "Grafana admin password set (make grafana-password prints it)"; \
	fi
	$(KIND_KUBECTL) apply -k $(MONITORING_DIR)
	$(KIND_KUBECTL) -n $(MONITORING_NAMESPACE) rollout status deployment/prometheus --timeout=$(ROLLOUT_TIMEOUT)
	$(KIND_KUBECTL) -n $(MONITORING_NAMESPACE) rollout status deployment/grafana --timeout=$(ROLLOUT_TIMEOUT)

monitoring-status: ## kind: monitoring workloads and the health of Prometheus' scrape targets
	$(KIND_KUBECTL) -n $(MONITORING_NAMESPACE) get deployment,daemonset,pods,service,configmap
	@curl -fsS '$(PROMETHEUS_URL)/api/v1/targets?state=active' | grep -o '"job":"[^"]*"\|"health":"[^"]*"' | paste - - | sort | uniq -c

monitoring-delete: ## kind: delete the monitoring stack (namespace included)
	$(KIND_KUBECTL) delete -k $(MONITORING_DIR) --ignore-not-found

monitoring-check: ## Check the unmodified Prometheus/Alertmanager configs with upstream promtool/amtool (docker)
	$(DOCKER) run --rm -v $(CURDIR)/$(MONITORING_DIR)/prometheus:/cfg:ro --entrypoint promtool $(PROMETHEUS_IMAGE) \
		check config /cfg/prometheus.yml
	$(DOCKER) run --rm -v $(CURDIR)/$(MONITORING_DIR)/prometheus:/cfg:ro -w /cfg --entrypoint promtool $(PROMETHEUS_IMAGE) \
		test rules tests/catsdogs-alerts.test.yml
	$(DOCKER) run --rm -v $(CURDIR)/$(MONITORING_DIR)/alertmanager:/cfg:ro --entrypoint amtool $(ALERTMANAGER_IMAGE) \
		check-config /cfg/alertmanager.yml

prometheus-logs: ## kind: last logs of Prometheus
	$(KIND_KUBECTL) -n $(MONITORING_NAMESPACE) logs deployment/prometheus --tail=200

grafana-logs: ## kind: last logs of Grafana
	$(KIND_KUBECTL) -n $(MONITORING_NAMESPACE) logs deployment/grafana --tail=200

grafana-password: ## kind: print Grafana's admin password
	@$(KIND_KUBECTL) -n $(MONITORING_NAMESPACE) get secret grafana-admin -o jsonpath='{.data.admin-password}' | base64 -d; echo

##@ Delivery: any cluster, registry, smoke test
k8s-deploy: ## Any cluster: apply K8S_OVERLAY (image DEPLOY_IMAGE if set) to K8S_CONTEXT and wait
	K8S_KUBECTL="$(K8S_KUBECTL)" scripts/ops/k8s-deploy.sh $(K8S_OVERLAY) $(K8S_NAMESPACE) '$(DEPLOY_IMAGE)' $(ROLLOUT_TIMEOUT)

k8s-smoke-test: ## Any cluster: smoke test one API pod through kubectl port-forward
	KUBECTL="$(K8S_KUBECTL)" NAMESPACE=$(K8S_NAMESPACE) LOCAL_PORT=$(SMOKE_LOCAL_PORT) scripts/ops/k8s-smoke-test.sh

docker-push: ## Push IMAGE:TAG as REGISTRY/IMAGE:TAG (REGISTRY=ghcr.io/<owner>; login with $REGISTRY_TOKEN)
	@test -n "$(REGISTRY)" || { echo "REGISTRY is not set: make docker-push REGISTRY=ghcr.io/<owner> [TAG=...]" >&2; exit 2; }
	@if [ -n "$$REGISTRY_TOKEN" ]; then \
		printf '%s' "$$REGISTRY_TOKEN" | $(DOCKER) login $(REGISTRY_HOST) -u '$(REGISTRY_USER)' --password-stdin; \
	fi
	$(DOCKER) tag $(IMAGE):$(TAG) $(REGISTRY)/$(IMAGE):$(TAG)
	$(DOCKER) push $(REGISTRY)/$(IMAGE):$(TAG)
ifeq ($(PUSH_LATEST),1)
	$(DOCKER) tag $(IMAGE):$(TAG) $(REGISTRY)/$(IMAGE):latest
	$(DOCKER) push $(REGISTRY)/$(IMAGE):latest
endif

smoke-test: ## Smoke test a running API: make smoke-test BASE_URL=http://localhost:8000
	deploy/smoke-test.sh $(BASE_URL)

##@ Deployment and CI config tests
test-ops: init checkov-venv ## Tests of the deployment, CI and monitoring configs (static + live Prometheus)
	$(BIN)/pytest tests/ops -q

# checkov pins packaging/networkx below .venv's: its own venv, every package pinned by requirements/checkov.txt.
CHECKOV_VENV ?= .cache/checkov-venv

$(CHECKOV_VENV)/.installed: requirements/checkov.txt
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --disable-pip-version-check -q -r requirements/checkov.txt
	touch $@

.PHONY: checkov-venv checkov
checkov-venv: $(CHECKOV_VENV)/.installed ## Install checkov (pinned: requirements/checkov.txt) into its own venv .cache/checkov-venv

checkov: init checkov-venv ## Policy scan: checkov on every rendered manifest and the Dockerfile; fails on findings not in deploy/checkov-skips.yaml
	$(BIN)/pytest -q -p no:randomly tests/ops/test_checkov.py

ops-tools: ## Install the tools tests/ops needs (root: apt packages; npm-groovy-lint into .cache/npm)
	scripts/ops/install-tools.sh
