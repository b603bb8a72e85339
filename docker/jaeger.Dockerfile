# Jaeger v2 (all-in-one) in an empty image: the static binary built by tools/build-jaeger.sh from
# the Go module github.com/jaegertracing/jaeger/cmd/jaeger@v1.76.0 (= Jaeger v2.13.0) and the
# config otel-config/jaeger.yaml (OTLP 4317/4318 in, memory storage, query API/UI on 16686).
# Where images can be pulled, jaegertracing/jaeger:2.13.0 is the same program with the UI built in
# (set JAEGER_IMAGE for docker/compose.yaml; see docker/README.md).
FROM scratch
COPY rootfs/ /
ENV JAEGER_UI_ASSETS=/etc/jaeger/ui
EXPOSE 4317 4318 16686 13133
ENTRYPOINT ["/usr/local/bin/jaeger"]
CMD ["--config", "/etc/jaeger/config.yaml"]
