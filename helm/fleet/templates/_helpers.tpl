{{/*
Named templates of the fleet chart.

Every service is rendered by the same four templates (Deployment, Service,
PodDisruptionBudget, HorizontalPodAutoscaler) and the same ServiceMonitor, driven by
two inputs: the service's *facts* (fleet.components below: binary, ports, probes, what
infrastructure it talks to; these follow from the code and are not values) and the
service's *values* block (replicas, resources, probe timings, ...). templates/
components.yaml loops over the services and calls them.

Most templates here take a context dict:
  root  the chart's top-level context ($)
  name  the service key (ingest, detector, notifier, archiver, api, canary)
  c     the service's facts (one entry of fleet.components)
  v     the service's values (.Values.<name>)
*/}}

{{/*
The facts of each service, from the code (services/<service>/src/config.rs, services/api/src/
lib.rs, services/runtime/src/serve.rs). A port's `env` is the FLEET_* variable that
sets its listen address: the services default to 127.0.0.1, which nothing outside the
pod could reach, so the chart binds 0.0.0.0. The metrics port is the one named
`metrics` (the scrape annotations and ServiceMonitors use it).

  singleton  exactly one pod, ever: replicas 1, strategy Recreate (the old pod is gone
             before the new one starts), no autoscaler, no disruption budget
  dialled    the port other pods connect to through the Service (the canary's receiver,
             which the notifier pages): the Service gets a virtual IP and keeps the pod
             as an endpoint while it is not ready (readiness is the canary's MQTT
             session; pages must still reach it)
  mqttTls    the service connects to MQTT as an identity of its own: with an mqtts://
             URL the chart mounts <service>.mqttTls.secretName (tls.crt, tls.key, ca.crt)
*/}}
{{- define "fleet.components" -}}
ingest:
  binary: fleet-ingest
  uses: [mqtt, kafka, database]
  metrics: true
  autoscaling: true
  mqttTls: true
  ports:
    - {name: metrics, port: 9181, env: FLEET_INGEST_METRICS_ADDR, appProtocol: http}
  probes: {port: metrics, startup: /healthz, liveness: /healthz, readiness: /readyz}
detector:
  binary: fleet-detector
  uses: [kafka, database]
  metrics: true
  autoscaling: true
  ports:
    - {name: metrics, port: 9183, env: FLEET_DETECTOR_METRICS_ADDR, appProtocol: http}
  probes: {port: metrics, startup: /healthz, liveness: /healthz, readiness: /readyz}
notifier:
  binary: fleet-notifier
  uses: [kafka, database]
  metrics: true
  autoscaling: false
  ports:
    - {name: metrics, port: 9184, env: FLEET_NOTIFIER_METRICS_ADDR, appProtocol: http}
  probes: {port: metrics, startup: /healthz, liveness: /healthz, readiness: /readyz}
archiver:
  binary: fleet-archiver
  uses: [kafka, database]
  metrics: true
  autoscaling: true
  ports:
    - {name: metrics, port: 9185, env: FLEET_ARCHIVER_METRICS_ADDR, appProtocol: http}
  probes: {port: metrics, startup: /healthz, liveness: /healthz, readiness: /readyz}
api:
  binary: fleet-api
  uses: [database]
  metrics: true
  autoscaling: true
  ports:
    - {name: grpc, port: 50051, env: FLEET_API_ADDR, appProtocol: grpc}
    - {name: http, port: 8080, env: FLEET_API_HTTP_ADDR, appProtocol: http}
    - {name: metrics, port: 9186, env: FLEET_API_METRICS_ADDR, appProtocol: http}
  probes: {port: metrics, startup: /healthz, liveness: /healthz, readiness: /readyz}
canary:
  binary: fleet-canary
  uses: [mqtt, database]
  metrics: true
  autoscaling: false
  mqttTls: true
  # Two canaries would publish as one gateway id (the broker disconnects one for the
  # other) and overwrite each other's registry entries (the webhook and secret pages
  # are checked against): one, and never two during a rollout.
  singleton: true
  dialled: receiver
  ports:
    - {name: metrics, port: 9187, env: FLEET_CANARY_METRICS_ADDR, appProtocol: http}
    - {name: receiver, port: 50090, env: FLEET_CANARY_LISTEN, appProtocol: grpc}
  probes: {port: metrics, startup: /healthz, liveness: /healthz, readiness: /readyz}
{{- end }}

{{/* ---------------------------------------------------------------- names */}}

{{- define "fleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/* The release's base name: "<release>-fleet", or just "<release>" when the release
name already says fleet. Resource names append the service: fleet-ingest. */}}
{{- define "fleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* ctx -> "<fullname>-<service>" */}}
{{- define "fleet.componentName" -}}
{{- printf "%s-%s" (include "fleet.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/* ---------------------------------------------------------------- labels */}}

{{/* root -> labels every object of the release carries */}}
{{- define "fleet.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "fleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fleet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* ctx -> the labels that select one service's pods (never change them: a
Deployment's selector is immutable) */}}
{{- define "fleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fleet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/* ctx -> all labels of one service's objects */}}
{{- define "fleet.labels" -}}
{{ include "fleet.commonLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/* ---------------------------------------------------------------- image */}}

{{/* root -> "repository:tag" or "repository@digest" (a digest wins: it cannot move) */}}
{{- define "fleet.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end }}

{{/* root -> the pod-level settings every fleet pod shares (services and the registry
import Job) */}}
{{- define "fleet.podCommon" -}}
automountServiceAccountToken: false
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* ---------------------------------------------------------------- environment */}}

{{/* ctx -> the container's env list. Order: what the chart manages (infrastructure
endpoints, secrets, listen addresses), then the service's own settings, then the
service's `env` values. The schema only admits `env` names the chart does not manage,
so a value can never override an endpoint or a secret by accident. */}}
{{- define "fleet.env" -}}
{{- $root := .root -}}
- name: RUST_LOG
  value: {{ $root.Values.logLevel | quote }}
{{- if has "database" .c.uses }}
- name: FLEET_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.database.urlSecret.name }}
      key: {{ $root.Values.database.urlSecret.key }}
{{- end }}
{{- if has "kafka" .c.uses }}
- name: FLEET_KAFKA_BROKERS
  value: {{ $root.Values.kafka.brokers | quote }}
- name: FLEET_KAFKA_PARTITIONS
  value: {{ $root.Values.kafka.topicPartitions | int | quote }}
{{- end }}
{{- if has "mqtt" .c.uses }}
- name: FLEET_MQTT_URL
  value: {{ $root.Values.mqtt.url | quote }}
{{- if include "fleet.mqttTls" . }}
{{- /* The pod's one MQTT identity, and the CA the broker's certificate chains to. */}}
- name: FLEET_MQTT_CA_FILE
  value: /etc/fleet/mqtt-tls/ca.crt
- name: FLEET_MQTT_CERT_FILE
  value: /etc/fleet/mqtt-tls/tls.crt
- name: FLEET_MQTT_KEY_FILE
  value: /etc/fleet/mqtt-tls/tls.key
{{- end }}
{{- end }}
{{- range .c.ports }}
- name: {{ .env }}
  value: {{ printf "0.0.0.0:%v" .port | quote }}
{{- end }}
{{- if eq .name "ingest" }}
{{- /* Replicas share one MQTT subscription; two clients with one id would keep
disconnecting each other, so each replica takes its pod's name. */}}
- name: FLEET_INGEST_CLIENT_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- if and (eq .name "detector") .v.thresholds }}
- name: FLEET_DETECTOR_CONFIG
  value: /etc/fleet/detector/detector.toml
{{- end }}
{{- if eq .name "notifier" }}
{{- /* Without it the notifier would sign with its built-in development secret. */}}
- name: FLEET_SIGNING_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .v.signingSecret.name }}
      key: {{ .v.signingSecret.key }}
{{- if .v.clinicCa.secretName }}
- name: FLEET_CLINIC_CA_FILE
  value: {{ printf "/etc/fleet/clinic-ca/%s" .v.clinicCa.key | quote }}
{{- end }}
{{- end }}
{{- if eq .name "canary" }}
{{- /* The webhook the canary writes into the registry for its clinic: by default this
Service's name, which the notifier's pods resolve in any cluster domain. */}}
- name: FLEET_CANARY_ADVERTISE
  value: {{ .v.advertise | default (printf "http://%s.%s.svc:%v" (include "fleet.componentName" .) $root.Release.Namespace (include "fleet.port" (dict "c" .c "name" .c.dialled))) | quote }}
- name: FLEET_CANARY_INTERVAL
  value: {{ .v.interval | quote }}
- name: FLEET_CANARY_DEADLINE
  value: {{ .v.deadline | quote }}
- name: FLEET_CANARY_PUMP_ID
  value: {{ .v.pumpId | quote }}
- name: FLEET_CANARY_GATEWAY_ID
  value: {{ .v.gatewayId | quote }}
- name: FLEET_CANARY_CLINIC_ID
  value: {{ .v.clinicId | quote }}
- name: FLEET_CANARY_STATE_DIR
  value: /var/lib/fleet/canary
{{- /* Without it the canary makes a new random secret at each start and registers it. */}}
{{- if .v.signingSecret.name }}
- name: FLEET_CANARY_SIGNING_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .v.signingSecret.name }}
      key: {{ .v.signingSecret.key }}
{{- end }}
{{- end }}
{{- range $key, $value := .v.env }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* ctx -> "true" when the service connects to an mqtts:// broker with a client
certificate from its mqttTls Secret; empty otherwise (the schema requires the Secret
exactly when the URL is mqtts://). */}}
{{- define "fleet.mqttTls" -}}
{{- if and .c.mqttTls (hasPrefix "mqtts://" .root.Values.mqtt.url) .v.mqttTls .v.mqttTls.secretName -}}
true
{{- end -}}
{{- end }}

{{/* (dict c name) -> the number of the service's port called name */}}
{{- define "fleet.port" -}}
{{- $name := .name -}}
{{- range .c.ports }}{{ if eq .name $name }}{{ .port }}{{ end }}{{ end -}}
{{- end }}

{{/* ctx -> volumes and mounts. The root filesystem is read-only; /tmp is the one
writable place, in case a library wants one. The canary's gateway outbox is an
emptyDir: its rounds live in the process's memory, so a reading kept across a restart
could only come back as a page the new process cannot match (or mistakes for a new
round with the same mark); losing the outbox with the pod loses nothing of value. */}}
{{- define "fleet.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if eq .name "canary" }}
- name: state
  emptyDir:
    sizeLimit: 256Mi
{{- end }}
{{- if include "fleet.mqttTls" . }}
- name: mqtt-tls
  secret:
    secretName: {{ .v.mqttTls.secretName }}
    # Owner and group (the pod's fsGroup) may read, nobody else.
    defaultMode: 288
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- if and (eq .name "detector") .v.thresholds }}
- name: detector-config
  configMap:
    name: {{ include "fleet.componentName" . }}-config
{{- end }}
{{- if and (eq .name "notifier") .v.clinicCa.secretName }}
- name: clinic-ca
  secret:
    secretName: {{ .v.clinicCa.secretName }}
    items:
      - key: {{ .v.clinicCa.key }}
        path: {{ .v.clinicCa.key }}
{{- end }}
{{- end }}

{{- define "fleet.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if eq .name "canary" }}
- name: state
  mountPath: /var/lib/fleet/canary
{{- end }}
{{- if include "fleet.mqttTls" . }}
- name: mqtt-tls
  mountPath: /etc/fleet/mqtt-tls
  readOnly: true
{{- end }}
{{- if and (eq .name "detector") .v.thresholds }}
- name: detector-config
  mountPath: /etc/fleet/detector
  readOnly: true
{{- end }}
{{- if and (eq .name "notifier") .v.clinicCa.secretName }}
- name: clinic-ca
  mountPath: /etc/fleet/clinic-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* ctx -> the pod's annotations as YAML: scrape hints for a Prometheus without the
Operator, the detector thresholds' checksum (a changed file rolls the detector, which
reads it at start), then the global and the service's own podAnnotations. */}}
{{- define "fleet.podAnnotations" -}}
{{- $a := dict -}}
{{- if and .c.metrics .root.Values.monitoring.scrapeAnnotations -}}
{{- $_ := set $a "prometheus.io/scrape" "true" -}}
{{- $_ := set $a "prometheus.io/port" (include "fleet.port" (dict "c" .c "name" "metrics")) -}}
{{- $_ := set $a "prometheus.io/path" "/metrics" -}}
{{- end -}}
{{- if and (eq .name "detector") .v.thresholds -}}
{{- $_ := set $a "checksum/detector-config" (.v.thresholds | sha256sum) -}}
{{- end -}}
{{- $a = merge (deepCopy (.v.podAnnotations | default dict)) (deepCopy .root.Values.podAnnotations) $a -}}
{{- if $a }}{{ toYaml $a }}{{ end -}}
{{- end }}

{{/* ctx -> startup, liveness and readiness probes: the handler is a fact of the
service, the timings are values. */}}
{{- define "fleet.probes" -}}
{{- $c := .c -}}
{{- range $kind := list "startup" "liveness" "readiness" }}
{{ $kind }}Probe:
  httpGet:
    path: {{ index $c.probes $kind }}
    port: {{ $c.probes.port }}
  {{- toYaml (index $.v.probes $kind) | nindent 2 }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- objects */}}

{{- define "fleet.deployment" -}}
{{- $root := .root -}}
{{- $autoscaled := and .c.autoscaling .v.autoscaling .v.autoscaling.enabled -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "fleet.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "fleet.labels" . | nindent 4 }}
spec:
  {{- if .c.singleton }}
  replicas: 1
  {{- else if not $autoscaled }}
  replicas: {{ .v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "fleet.selectorLabels" . | nindent 6 }}
  strategy:
    {{- if .c.singleton }}
    # The old pod is gone before the new one starts: two must never run at once.
    type: Recreate
    {{- else }}
    # One new pod before an old one goes: a consumer group rebalances once per step
    # and capacity never drops during a rollout.
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
    {{- end }}
  template:
    metadata:
      labels:
        {{- include "fleet.labels" . | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with include "fleet.podAnnotations" . | fromYaml }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      {{- include "fleet.podCommon" $root | nindent 6 }}
      terminationGracePeriodSeconds: {{ .v.terminationGracePeriodSeconds }}
      {{- if and $root.Values.spreadAcrossNodes (not .c.singleton) }}
      # Replicas on different nodes where possible, so one node's loss leaves the rest.
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "fleet.selectorLabels" . | nindent 14 }}
      {{- end }}
      {{- with (.v.nodeSelector | default $root.Values.nodeSelector) }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (.v.tolerations | default $root.Values.tolerations) }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (.v.affinity | default $root.Values.affinity) }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .name }}
          image: {{ include "fleet.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: [{{ .c.binary | quote }}]
          env:
            {{- include "fleet.env" . | nindent 12 }}
          ports:
            {{- range .c.ports }}
            - name: {{ .name }}
              containerPort: {{ .port }}
              protocol: TCP
            {{- end }}
          {{- include "fleet.probes" . | trim | nindent 10 }}
          resources:
            {{- toYaml .v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "fleet.volumeMounts" . | nindent 12 }}
      volumes:
        {{- include "fleet.volumes" . | nindent 8 }}
{{- end }}

{{/* A service's Service is headless: it exists so that a ServiceMonitor (or an
Ingress) can find the pods, and needs no virtual IP. A service other pods dial (the
canary's receiver) gets one, and stays reachable while not ready. */}}
{{- define "fleet.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "fleet.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "fleet.labels" . | nindent 4 }}
spec:
  {{- if .c.dialled }}
  type: ClusterIP
  # Readiness is the canary's MQTT session; its receiver must take pages regardless.
  publishNotReadyAddresses: true
  {{- else if .c.metrics }}
  clusterIP: None
  {{- else }}
  type: ClusterIP
  {{- end }}
  selector:
    {{- include "fleet.selectorLabels" . | nindent 4 }}
  ports:
    {{- range .c.ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .name }}
      protocol: TCP
      appProtocol: {{ .appProtocol }}
    {{- end }}
{{- end }}

{{- define "fleet.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "fleet.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "fleet.labels" . | nindent 4 }}
spec:
  {{- if hasKey .v.pdb "minAvailable" }}
  minAvailable: {{ .v.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .v.pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "fleet.selectorLabels" . | nindent 6 }}
{{- end }}

{{- define "fleet.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "fleet.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "fleet.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "fleet.componentName" . }}
  minReplicas: {{ .v.autoscaling.minReplicas }}
  maxReplicas: {{ .v.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .v.autoscaling.targetCPUUtilizationPercentage }}
  behavior:
    # Each scale step of a Kafka consumer rebalances its group; scale down slowly so a
    # short lull does not cost two rebalances.
    scaleDown:
      stabilizationWindowSeconds: {{ .v.autoscaling.scaleDownStabilizationSeconds }}
{{- end }}

{{/* The job label is pinned to fleet-<service> (whatever the release is called), so
that deploy/prometheus/alerts.yml and the dashboards can name it. */}}
{{- define "fleet.serviceMonitor" -}}
{{- $mon := .root.Values.monitoring.serviceMonitor -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "fleet.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "fleet.labels" . | nindent 4 }}
    {{- with $mon.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "fleet.selectorLabels" . | nindent 6 }}
  namespaceSelector:
    matchNames:
      - {{ .root.Release.Namespace }}
  endpoints:
    - port: metrics
      path: /metrics
      interval: {{ $mon.interval }}
      scrapeTimeout: {{ $mon.scrapeTimeout }}
      relabelings:
        - action: replace
          targetLabel: job
          replacement: {{ printf "fleet-%s" .name }}
{{- end }}
