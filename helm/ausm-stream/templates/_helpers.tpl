{{/* The release's name for every resource (at most 40 characters: KubeRay adds suffixes). */}}
{{- define "ausm.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ausm.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ausm.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* repository@digest when image.digest is set (pinned), else repository:tag. */}}
{{- define "ausm.image" -}}
{{- if .Values.image.digest -}}
{{ printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end -}}
{{- end -}}

{{/* The secrets, as AUSM_SECTION__KEY variables (pipeline/config.py), in every Ray container:
     deploy/cluster.py:app reads them where Serve's build task runs, and Serve places that
     zero-CPU task on any node of the cluster; the configuration it builds (keys and tokens)
     then reaches the pipeline actor and the API replicas through Ray. HOME is /tmp, the
     writable emptyDir under a read-only root filesystem. Ray's RAY_AUTH_MODE and
     RAY_AUTH_TOKEN are KubeRay's to set (rayClusterConfig.authOptions). */}}
{{- define "ausm.env" -}}
{{- $s := .Values.existingSecret -}}
- name: HOME
  value: /tmp
- name: AUSM_STORAGE__ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ $s.name }}, key: {{ $s.accessKeyKey }}}
- name: AUSM_STORAGE__SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ $s.name }}, key: {{ $s.secretKeyKey }}}
- name: AUSM_API__TOKEN
  valueFrom:
    secretKeyRef: {name: {{ $s.name }}, key: {{ $s.apiTokenKey }}}
- name: AUSM_API__METRICS_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ $s.name }}, key: {{ $s.metricsTokenKey }}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}
- name: AUSM_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $s.name }}, key: {{ $s.kafkaPasswordKey }}}
{{- end }}
{{- end -}}

{{/* The pod-level settings of every Ray pod: no service account token in any container
     (KubeRay's autoscaler gets a projected one of its own, "ausm.autoscalerToken") and the
     restricted Pod Security Standard's user and seccomp profile. */}}
{{- define "ausm.podSecurity" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{- define "ausm.containerSecurity" -}}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
{{- end -}}

{{- define "ausm.volumes" -}}
- name: pipeline-config
  configMap:
    name: {{ include "ausm.fullname" . }}-config
- name: tmp
  emptyDir: {}
{{- with .Values.kafka.tlsSecret }}
- name: kafka-tls
  secret: {secretName: {{ . }}}
{{- end }}
{{- end -}}

{{- define "ausm.mounts" -}}
- name: pipeline-config
  mountPath: /etc/ausm-stream
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tlsSecret }}
- name: kafka-tls
  mountPath: /etc/ausm-stream-kafka
  readOnly: true
{{- end }}
{{- end -}}

{{/* What the kubelet would mount into every container with automountServiceAccountToken,
     as a volume that only KubeRay's autoscaler mounts (autoscalerOptions.volumeMounts): it
     scales the worker groups through the Kubernetes API with the head pod's service account
     (KubeRay's, made for the autoscaler), and the Ray container, which runs the
     application's code, has no token at all. */}}
{{- define "ausm.autoscalerToken" -}}
- name: autoscaler-token
  projected:
    sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3607}
      - configMap:
          name: kube-root-ca.crt
          items: [{key: ca.crt, path: ca.crt}]
      - downwardAPI:
          items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]
{{- end -}}
