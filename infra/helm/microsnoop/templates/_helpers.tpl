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
{{- printf "postgresql://%s:$(MICROSNOOP_PG_PASSWORD)@%s:%s/%s%s" (include "microsnoop.postgresql.user" $ctx) (include "microsnoop.postgresql.host" $ctx) (toString (include "microsnoop.postgresql.port" $ctx)) .database (include "microsnoop.postgresql.query" $ctx) -}}
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
Environment of every project-image container that talks to the platform (search API, dashboard,
pipeline upload job): MICROSNOOP_* settings (services/settings.py), credentials from Secrets only.
*/}}
{{- define "microsnoop.platformEnv" -}}
- name: MICROSNOOP_PG_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "microsnoop.postgresql.secretName" . }}
      key: {{ include "microsnoop.postgresql.passwordKey" . }}
- name: MICROSNOOP_PG_DSN
  value: {{ include "microsnoop.postgresql.dsn" (dict "context" . "database" (include "microsnoop.postgresql.database" .)) | quote }}
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
- name: MICROSNOOP_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "microsnoop.s3.secretName" . }}
      key: {{ include "microsnoop.s3.accessKeyKey" . }}
- name: MICROSNOOP_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "microsnoop.s3.secretName" . }}
      key: {{ include "microsnoop.s3.secretKeyKey" . }}
- name: MICROSNOOP_IMAGE
  value: {{ include "microsnoop.stepImage" . | quote }}
- name: MICROSNOOP_DATA_DIR
  value: /data
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
{{- if and (not .Values.mlflow.enabled) (not .Values.externalMlflow.uri) -}}
{{- fail "mlflow.enabled=false needs externalMlflow.uri (the tracking server URL), or set mlflow.enabled=true" -}}
{{- end -}}
{{- end -}}
