{{/* vim: set filetype=mustache: */}}
{{/*
Names
*/}}
{{- define "microsnoop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "microsnoop.fullname" -}}
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
{{- end -}}

{{/* "<fullname>-<component>", shortened to fit a DNS label */}}
{{- define "microsnoop.componentName" -}}
{{- printf "%s-%s" (include "microsnoop.fullname" .context) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "microsnoop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels. Call with (dict "context" $ "component" "search").
*/}}
{{- define "microsnoop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "microsnoop.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "microsnoop.labels" -}}
{{ include "microsnoop.selectorLabels" . }}
helm.sh/chart: {{ include "microsnoop.chart" .context }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/part-of: microsnoop
{{- with .context.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Metadata annotations shared by every object (empty when none). */}}
{{- define "microsnoop.annotations" -}}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod labels that open the NetworkPolicies of the database and of S3 to a pod. */}}
{{- define "microsnoop.dbClientLabel" -}}
microsnoop.io/postgresql-client: "true"
{{- end -}}
{{- define "microsnoop.s3ClientLabel" -}}
microsnoop.io/s3-client: "true"
{{- end -}}

{{/*
Images. Call with (dict "image" .Values.x.image "global" .Values.global).
A digest wins over the tag; global.imageRegistry wins over the image's registry.
*/}}
{{- define "microsnoop.imageRef" -}}
{{- $registry := default .image.registry .global.imageRegistry -}}
{{- $repo := ternary (printf "%s/%s" $registry .image.repository) .image.repository (ne $registry "") -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (toString .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "microsnoop.image" -}}
{{- include "microsnoop.imageRef" (dict "image" .Values.image "global" .Values.global) -}}
{{- end -}}

{{/* The image the compiled pipeline steps run: pipelines.stepImage when set (e.g. the CUDA build), else image. */}}
{{- define "microsnoop.stepImage" -}}
{{- if .Values.pipelines.stepImage.repository -}}
{{- include "microsnoop.imageRef" (dict "image" .Values.pipelines.stepImage "global" .Values.global) -}}
{{- else -}}
{{- include "microsnoop.image" . -}}
{{- end -}}
{{- end -}}

{{- define "microsnoop.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "microsnoop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "microsnoop.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
PostgreSQL: bundled StatefulSet or an external server.
*/}}
{{- define "microsnoop.postgresql.host" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "microsnoop.componentName" (dict "context" . "component" "postgresql") -}}
{{- else -}}
{{- .Values.externalDatabase.host -}}
{{- end -}}
{{- end -}}

{{- define "microsnoop.postgresql.port" -}}
{{- ternary .Values.postgresql.service.port .Values.externalDatabase.port .Values.postgresql.enabled -}}
{{- end -}}

{{- define "microsnoop.postgresql.user" -}}
{{- ternary .Values.postgresql.auth.username .Values.externalDatabase.user .Values.postgresql.enabled -}}
{{- end -}}

{{/*
Least privilege: each service logs in as its own role. Call with (dict "context" $ "role" "writer|reader|mlflow").
The bundled server has three roles (none a superuser); an external server gets externalDatabase.user for all.
*/}}
{{- define "microsnoop.postgresql.roleUser" -}}
{{- $a := .context.Values.postgresql.auth -}}
{{- if not .context.Values.postgresql.enabled -}}
{{- .context.Values.externalDatabase.user -}}
{{- else if eq .role "reader" -}}
{{- $a.readerUsername -}}
{{- else if eq .role "mlflow" -}}
{{- $a.mlflowUsername -}}
{{- else -}}
{{- $a.username -}}
{{- end -}}
{{- end -}}

{{- define "microsnoop.postgresql.rolePasswordKey" -}}
{{- $k := .context.Values.postgresql.auth.secretKeys -}}
{{- if not .context.Values.postgresql.enabled -}}
{{- .context.Values.externalDatabase.existingSecretPasswordKey -}}
{{- else if eq .role "reader" -}}
{{- $k.readerPasswordKey -}}
{{- else if eq .role "mlflow" -}}
{{- $k.mlflowPasswordKey -}}
{{- else -}}
{{- $k.passwordKey -}}
{{- end -}}
{{- end -}}

{{- define "microsnoop.postgresql.database" -}}
{{- ternary .Values.postgresql.auth.database .Values.externalDatabase.database .Values.postgresql.enabled -}}
{{- end -}}

{{- define "microsnoop.postgresql.mlflowDatabase" -}}
{{- ternary .Values.postgresql.auth.mlflowDatabase .Values.externalDatabase.mlflowDatabase .Values.postgresql.enabled -}}
{{- end -}}

{{- define "microsnoop.postgresql.secretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- default (include "microsnoop.componentName" (dict "context" . "component" "postgresql")) .Values.postgresql.auth.existingSecret -}}
{{- else -}}
{{- .Values.externalDatabase.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "microsnoop.postgresql.passwordKey" -}}
{{- ternary .Values.postgresql.auth.secretKeys.passwordKey .Values.externalDatabase.existingSecretPasswordKey .Values.postgresql.enabled -}}
{{- end -}}

{{/* "?sslmode=..." for an external server, nothing inside the cluster's own network policy */}}
{{- define "microsnoop.postgresql.query" -}}
{{- if and (not .Values.postgresql.enabled) .Values.externalDatabase.sslmode -}}
{{- printf "?sslmode=%s" .Values.externalDatabase.sslmode -}}
{{- end -}}
{{- end -}}

{{/*
A DSN whose password is expanded by the kubelet from MICROSNOOP_PG_PASSWORD (a secretKeyRef declared
before it), so no password is ever written into a manifest. Call with (dict "context" $ "database" "name").
*/}}
{{- define "microsnoop.postgresql.dsn" -}}
{{- $ctx := .context -}}
{{- $user := include "microsnoop.postgresql.roleUser" (dict "context" $ctx "role" (default "writer" .role)) -}}
{{- printf "postgresql://%s:$(MICROSNOOP_PG_PASSWORD)@%s:%s/%s%s" $user (include "microsnoop.postgresql.host" $ctx) (toString (include "microsnoop.postgresql.port" $ctx)) .database (include "microsnoop.postgresql.query" $ctx) -}}
{{- end -}}

{{/*
S3: bundled MinIO or an external endpoint.
*/}}
{{- define "microsnoop.s3.endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "%s:%v" (include "microsnoop.componentName" (dict "context" . "component" "minio")) .Values.minio.service.port -}}
{{- else -}}
{{- .Values.externalS3.endpoint -}}
{{- end -}}
{{- end -}}

{{- define "microsnoop.s3.secure" -}}
{{- ternary "false" (toString .Values.externalS3.secure) .Values.minio.enabled -}}
{{- end -}}

{{- define "microsnoop.s3.endpointUrl" -}}
{{- printf "%s://%s" (ternary "https" "http" (eq (include "microsnoop.s3.secure" .) "true")) (include "microsnoop.s3.endpoint" .) -}}
{{- end -}}

{{- define "microsnoop.s3.bucket" -}}
{{- ternary .Values.minio.bucket .Values.externalS3.bucket .Values.minio.enabled -}}
{{- end -}}

{{- define "microsnoop.s3.region" -}}
{{- ternary "" .Values.externalS3.region .Values.minio.enabled -}}
{{- end -}}

{{- define "microsnoop.s3.secretName" -}}
{{- if .Values.minio.enabled -}}
{{- default (include "microsnoop.componentName" (dict "context" . "component" "minio")) .Values.minio.auth.existingSecret -}}
{{- else -}}
{{- .Values.externalS3.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The Secret of the per-service S3 users (bundled MinIO); external S3 uses externalS3.existingSecret. */}}
{{- define "microsnoop.s3.serviceUsersSecret" -}}
{{- default (include "microsnoop.componentName" (dict "context" . "component" "minio-users")) .Values.minio.auth.serviceUsersSecret -}}
{{- end -}}

{{/* S3 credentials of one service as env: (dict "context" $ "service" "mlflow|dashboard" "prefix" "MICROSNOOP_S3_|AWS_") */}}
{{- define "microsnoop.s3.serviceEnv" -}}
{{- $ctx := .context -}}
{{- $secret := ternary (include "microsnoop.s3.serviceUsersSecret" $ctx) (include "microsnoop.s3.secretName" $ctx) $ctx.Values.minio.enabled -}}
{{- $akey := ternary (printf "%s-access-key" .service) (include "microsnoop.s3.accessKeyKey" $ctx) $ctx.Values.minio.enabled -}}
{{- $skey := ternary (printf "%s-secret-key" .service) (include "microsnoop.s3.secretKeyKey" $ctx) $ctx.Values.minio.enabled -}}
- name: {{ ternary "AWS_ACCESS_KEY_ID" "MICROSNOOP_S3_ACCESS_KEY" (eq .prefix "AWS_") }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $akey }}
- name: {{ ternary "AWS_SECRET_ACCESS_KEY" "MICROSNOOP_S3_SECRET_KEY" (eq .prefix "AWS_") }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $skey }}
{{- end -}}

{{- define "microsnoop.s3.accessKeyKey" -}}
{{- ternary .Values.minio.auth.secretKeys.rootUserKey .Values.externalS3.existingSecretAccessKeyKey .Values.minio.enabled -}}
{{- end -}}

{{- define "microsnoop.s3.secretKeyKey" -}}
{{- ternary .Values.minio.auth.secretKeys.rootPasswordKey .Values.externalS3.existingSecretSecretKeyKey .Values.minio.enabled -}}
{{- end -}}

{{/* MLflow tracking URI seen from inside the cluster */}}
{{- define "microsnoop.mlflow.uri" -}}
{{- if .Values.mlflow.enabled -}}
{{- printf "http://%s:%v" (include "microsnoop.componentName" (dict "context" . "component" "mlflow")) .Values.mlflow.service.port -}}
{{- else -}}
{{- .Values.externalMlflow.uri -}}
{{- end -}}
{{- end -}}

{{/*
A generated secret value, kept across upgrades: the existing Secret's value when the cluster has one
(lookup), else a new random one. Call with (dict "context" $ "name" "secret-name" "key" "password").
*/}}
{{- define "microsnoop.secretValue" -}}
{{- $existing := lookup "v1" "Secret" .context.Release.Namespace .name -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum 32 | b64enc -}}
{{- end -}}
{{- end -}}

{{/*
Environment of a project-image container that talks to the platform (search API, dashboard):
MICROSNOOP_* settings (services/settings.py), credentials from Secrets only, least privilege.
Call with (dict "context" $ "role" "reader" "s3" "dashboard"); "s3" "" gives no S3 keys at all.
*/}}
{{- define "microsnoop.platformEnv" -}}
{{- $ctx := .context -}}
- name: MICROSNOOP_PG_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "microsnoop.postgresql.secretName" $ctx }}
      key: {{ include "microsnoop.postgresql.rolePasswordKey" (dict "context" $ctx "role" .role) }}
- name: MICROSNOOP_PG_DSN
  value: {{ include "microsnoop.postgresql.dsn" (dict "context" $ctx "role" .role "database" (include "microsnoop.postgresql.database" $ctx)) | quote }}
{{- with $ctx }}
- name: MICROSNOOP_MLFLOW_URI
  value: {{ include "microsnoop.mlflow.uri" . | quote }}
- name: MICROSNOOP_MODEL_NAME
  value: {{ .Values.modelName | quote }}
- name: MICROSNOOP_STORAGE_URI
  value: {{ printf "s3://%s/%s" (include "microsnoop.s3.bucket" .) .Values.storage.prefix | quote }}
- name: MICROSNOOP_S3_ENDPOINT
  value: {{ include "microsnoop.s3.endpoint" . | quote }}
- name: MICROSNOOP_S3_SECURE
  value: {{ include "microsnoop.s3.secure" . | quote }}
{{- with (include "microsnoop.s3.region" .) }}
- name: MICROSNOOP_S3_REGION
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if .s3 }}
{{ include "microsnoop.s3.serviceEnv" (dict "context" $ctx "service" .s3 "prefix" "MICROSNOOP_S3_") }}
{{- end }}
- name: MICROSNOOP_IMAGE
  value: {{ include "microsnoop.stepImage" $ctx | quote }}
- name: MICROSNOOP_DATA_DIR
  value: /data
{{- end -}}

{{/*
The oauth2-proxy sidecar: OIDC login in front of a web UI on 127.0.0.1.
Call with (dict "context" $ "upstream" "http://127.0.0.1:8501" "host" "dashboard.example.com").
*/}}
{{- define "microsnoop.oauth2Proxy" -}}
{{- $ctx := .context -}}
{{- $a := $ctx.Values.auth -}}
- name: oauth2-proxy
  image: {{ include "microsnoop.imageRef" (dict "image" $a.image "global" $ctx.Values.global) }}
  imagePullPolicy: {{ $a.image.pullPolicy }}
  securityContext:
    {{- toYaml $ctx.Values.containerSecurityContext | nindent 4 }}
  args:
    - --http-address=0.0.0.0:4180
    - --upstream={{ .upstream }}
    - --provider=oidc
    - --oidc-issuer-url={{ $a.oidc.issuerUrl }}
    - --client-id={{ $a.oidc.clientId }}
    {{- range $a.oidc.emailDomains }}
    - --email-domain={{ . }}
    {{- end }}
    {{- range $a.oidc.allowedGroups }}
    - --allowed-group={{ . }}
    {{- end }}
    {{- if .host }}
    - --redirect-url=https://{{ .host }}/oauth2/callback
    {{- end }}
    - --cookie-secure=true
    - --cookie-samesite=lax
    - --reverse-proxy=true
    - --skip-provider-button=true
    - --silence-ping-logging=true
  env:
    - name: OAUTH2_PROXY_CLIENT_SECRET
      valueFrom:
        secretKeyRef:
          name: {{ $a.oidc.existingSecret }}
          key: {{ $a.oidc.clientSecretKey }}
    - name: OAUTH2_PROXY_COOKIE_SECRET
      valueFrom:
        secretKeyRef:
          name: {{ include "microsnoop.componentName" (dict "context" $ctx "component" "oauth2-proxy") }}
          key: cookie-secret
  ports:
    - name: login
      containerPort: 4180
      protocol: TCP
  livenessProbe:
    httpGet:
      path: /ping
      port: login
    periodSeconds: 15
    timeoutSeconds: 5
  readinessProbe:
    httpGet:
      path: /ready
      port: login
    periodSeconds: 10
    timeoutSeconds: 5
  resources:
    {{- toYaml $a.resources | nindent 4 }}
{{- end -}}

{{/* Writable scratch folders of project-image containers (the root filesystem is read-only). */}}
{{- define "microsnoop.scratchVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /data
{{- end -}}
{{- define "microsnoop.scratchVolumes" -}}
- name: tmp
  emptyDir: {}
- name: data
  emptyDir: {}
{{- end -}}

{{/*
Fail early on values that cannot work, with the fix in the message.
*/}}
{{- define "microsnoop.validateValues" -}}
{{- if not .Values.postgresql.enabled -}}
{{- if not .Values.externalDatabase.host -}}
{{- fail "postgresql.enabled=false needs externalDatabase.host (and externalDatabase.existingSecret): point it at a PostgreSQL server with pgvector, or set postgresql.enabled=true" -}}
{{- end -}}
{{- if not .Values.externalDatabase.existingSecret -}}
{{- fail "externalDatabase.existingSecret is required: create a Secret holding the database password (key externalDatabase.existingSecretPasswordKey) and name it here" -}}
{{- end -}}
{{- end -}}
{{- if not .Values.minio.enabled -}}
{{- if or (not .Values.externalS3.endpoint) (not .Values.externalS3.bucket) -}}
{{- fail "minio.enabled=false needs externalS3.endpoint (host:port) and externalS3.bucket, or set minio.enabled=true" -}}
{{- end -}}
{{- if not .Values.externalS3.existingSecret -}}
{{- fail "externalS3.existingSecret is required: create a Secret with the S3 access key and secret key (keys externalS3.existingSecretAccessKeyKey / existingSecretSecretKeyKey) and name it here" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.auth.enabled (or (not .Values.auth.oidc.issuerUrl) (not .Values.auth.oidc.clientId) (not .Values.auth.oidc.existingSecret)) -}}
{{- fail "the dashboard and MLflow need a login: set auth.oidc.issuerUrl, auth.oidc.clientId and auth.oidc.existingSecret (your identity provider; see docs/security.md), or auth.enabled=false only behind your own authenticating proxy" -}}
{{- end -}}
{{- if and (not .Values.mlflow.enabled) (not .Values.externalMlflow.uri) -}}
{{- fail "mlflow.enabled=false needs externalMlflow.uri (the tracking server URL), or set mlflow.enabled=true" -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the search API's hashed keys file. */}}
{{- define "microsnoop.search.keysSecret" -}}
{{- default (include "microsnoop.componentName" (dict "context" . "component" "search-keys")) .Values.search.auth.existingSecret -}}
{{- end -}}

{{/*
NetworkPolicy egress rules shared by the workloads. Each takes the root context.
*/}}
{{- define "microsnoop.np.dns" -}}
- to:
    {{- toYaml .Values.networkPolicy.dns | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}

{{- define "microsnoop.np.postgresql" -}}
{{- if .Values.postgresql.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "microsnoop.selectorLabels" (dict "context" . "component" "postgresql") | nindent 10 }}
  ports:
    - port: 5432
      protocol: TCP
{{- else }}
- ports:  # an external server: its address is not known here, its port is
    - port: {{ .Values.externalDatabase.port }}
      protocol: TCP
{{- end }}
{{- end -}}

{{- define "microsnoop.np.s3" -}}
{{- if .Values.minio.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "microsnoop.selectorLabels" (dict "context" . "component" "minio") | nindent 10 }}
  ports:
    - port: 9000
      protocol: TCP
{{- else }}
- ports:
    - port: {{ (splitList ":" .Values.externalS3.endpoint) | last | default "443" | int }}
      protocol: TCP
{{- end }}
{{- end -}}

{{- define "microsnoop.np.mlflow" -}}
{{- if .Values.mlflow.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "microsnoop.selectorLabels" (dict "context" . "component" "mlflow") | nindent 10 }}
  ports:
    - port: 5000
      protocol: TCP
{{- else }}
- ports:
    - port: 443
      protocol: TCP
{{- end }}
{{- end -}}

{{- define "microsnoop.np.oidc" -}}
{{- if .Values.auth.enabled }}
- to:
    {{- toYaml .Values.networkPolicy.oidcEgress | nindent 4 }}
  ports:
    - port: 443
      protocol: TCP
{{- end }}
{{- end -}}

{{/* A NetworkPolicy's metadata and pod selector: (dict "context" $ "component" "search") */}}
{{- define "microsnoop.np.header" -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "microsnoop.componentName" (dict "context" .context "component" .component) }}
  namespace: {{ .context.Release.Namespace | quote }}
  labels:
    {{- include "microsnoop.labels" (dict "context" .context "component" .component) | nindent 4 }}
  {{- include "microsnoop.annotations" .context | nindent 2 }}
spec:
  podSelector:
    matchLabels:
      {{- include "microsnoop.selectorLabels" (dict "context" .context "component" .component) | nindent 6 }}
  policyTypes:
    - Ingress
    - Egress
{{- end -}}
