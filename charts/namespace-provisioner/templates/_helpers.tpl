{{/* Labels of every object: the kustomize manifests' two, plus Helm's. */}}
{{- define "np.labels" -}}
app.kubernetes.io/name: namespace-provisioner
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{/* Selector labels of pods (as in the kustomize manifests; never changes on upgrade). */}}
{{- define "np.selectorLabels" -}}
app.kubernetes.io/name: namespace-provisioner
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The selector key the admission policies require on namespaces. */}}
{{- define "np.selectorKey" -}}
{{- splitList "=" (.Values.selector | default "controller.observatorium.io=namespace-provisioner") | first -}}
{{- end }}

{{/* Environment both binaries share when the values differ from their defaults. */}}
{{- define "np.sharedEnv" -}}
{{- if .Values.selector }}
- name: NP_SELECTOR
  value: {{ .Values.selector | quote }}
{{- end }}
{{- if ne .Values.grant.name "namespace-provisioner-grant" }}
- name: NP_CLUSTER_ROLE
  value: {{ .Values.grant.name | quote }}
{{- end }}
{{- end }}

{{/*
The admission policy of one identity (function/admission-policy.yaml,
cronjob/base/admission-policy.yaml): every write by that ServiceAccount must
target a namespace carrying the selector key, or an object inside one; a
RoleBinding it makes may bind only the grant or the set's own Role.
Arguments: root, component, sa, header (the first lines of the message).
*/}}
{{- define "np.admissionPolicy" -}}
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {{ .sa }}-managed-only
  labels:
    {{- include "np.labels" . | nindent 4 }}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["*"]
        operations: [CREATE, UPDATE, DELETE]
        resources: [namespaces, serviceaccounts, serviceaccounts/token]
      - apiGroups: [rbac.authorization.k8s.io]
        apiVersions: ["*"]
        operations: [CREATE, UPDATE, DELETE]
        resources: [roles, rolebindings]
  matchConditions:
    - name: only-this-identity
      expression: >-
        request.userInfo.username ==
        'system:serviceaccount:{{ .root.Release.Namespace }}:{{ .sa }}'
        || (has(request.userInfo.groups) && '{{ .sa }}' in request.userInfo.groups)
  variables:
    - name: managedKey
      expression: "'{{ include "np.selectorKey" .root }}'"
    # The ClusterRole every managed namespace binds (--cluster-role).
    - name: grant
      expression: "'{{ .root.Values.grant.name }}'"
    # Whose labels decide: a namespace itself (as it was, except on create),
    # or the namespace a namespaced object lives in.
    - name: target
      expression: >-
        request.resource.resource == 'namespaces'
        ? dyn(request.operation == 'CREATE' ? object : oldObject)
        : dyn(namespaceObject)
    - name: targetLabels
      expression: >-
        variables.target != null && has(variables.target.metadata.labels)
        ? variables.target.metadata.labels : dyn({})
    # Namespace trees: the parent label or a tree label.
    - name: treeSuffix
      expression: "'.tree.controller.observatorium.io/depth'"
    - name: inTree
      expression: >-
        'controller.observatorium.io/parent' in variables.targetLabels
        || variables.targetLabels.exists(k, k.endsWith(variables.treeSuffix))
    # The object written (or deleted) is a propagated copy.
    - name: isCopy
      expression: >-
        request.resource.resource != 'namespaces'
        && (request.operation == 'DELETE'
        ? has(oldObject.metadata.labels) && 'controller.observatorium.io/inherited-from' in oldObject.metadata.labels
        : has(object.metadata.labels) && 'controller.observatorium.io/inherited-from' in object.metadata.labels)
    # An update of a Namespace that changes tree labels and nothing else in its metadata.
    - name: onlyTreeLabels
      expression: >-
        request.resource.resource == 'namespaces' && request.operation == 'UPDATE'
        && variables.targetLabels.all(k, k.endsWith(variables.treeSuffix)
        || (has(object.metadata.labels) && k in object.metadata.labels
        && object.metadata.labels[k] == variables.targetLabels[k]))
        && (!has(object.metadata.labels)
        || object.metadata.labels.all(k, k.endsWith(variables.treeSuffix) || k in variables.targetLabels))
        && has(object.metadata.annotations) == has(oldObject.metadata.annotations)
        && (!has(object.metadata.annotations) || object.metadata.annotations == oldObject.metadata.annotations)
  validations:
    - expression: >-
        variables.managedKey in variables.targetLabels
        || (variables.isCopy && variables.inTree)
        || variables.onlyTreeLabels
      reason: Forbidden
      message: >-
        {{ .who }} may only write namespaces labelled
        {{ include "np.selectorKey" .root }} and objects inside them, propagated copies
        (label controller.observatorium.io/inherited-from) in namespaces in a
        tree, and the tree labels of namespaces
    # RBAC lets anyone bind a role whose permissions they hold; this identity
    # binds only the grant ClusterRole and the set's own Role, nothing else.
    - expression: >-
        request.resource.resource != 'rolebindings'
        || request.operation == 'DELETE'
        || variables.isCopy
        || (dyn(object).roleRef.kind == 'ClusterRole' && dyn(object).roleRef.name == variables.grant)
        || (dyn(object).roleRef.kind == 'Role' && dyn(object).roleRef.name == 'namespace-provisioner')
      reason: Forbidden
      message: >-
        RoleBindings made by namespace-provisioner may bind only the
        {{ .root.Values.grant.name }} ClusterRole or the namespace-provisioner Role
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {{ .sa }}-managed-only
  labels:
    {{- include "np.labels" . | nindent 4 }}
spec:
  policyName: {{ .sa }}-managed-only
  validationActions: [Deny]
{{- end }}
