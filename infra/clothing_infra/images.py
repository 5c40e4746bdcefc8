"""ECR repositories and the two images built and pushed into them."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from clothing_infra.settings import REPO_ROOT, Settings

MODEL_CONTEXT = REPO_ROOT / "services" / "model"
GATEWAY_CONTEXT = REPO_ROOT / "services" / "gateway"
PLATFORM = "linux/amd64"
_SKIPPED = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".DS_Store"}

LIFECYCLE_POLICY = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "description": "Drop untagged layers a week after they were pushed",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": 7,
                },
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 2,
                "description": "Keep the 20 newest images",
                "selection": {
                    "tagStatus": "any",
                    "countType": "imageCountMoreThan",
                    "countNumber": 20,
                },
                "action": {"type": "expire"},
            },
        ]
    },
    indent=2,
)


def _files(root: Path) -> Iterable[tuple[str, Path]]:
    if root.is_file():
        yield root.name, root
        return
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        skipped = _SKIPPED.intersection(relative.parts) or path.suffix == ".pyc"
        if path.is_file() and not skipped:
            yield f"{root.name}/{relative.as_posix()}", path


def content_tag(inputs: Iterable[Path], build_args: Mapping[str, str]) -> str:
    """A tag derived from the files that go into an image and its build arguments."""
    digest = hashlib.sha256()
    for root in inputs:
        for name, path in _files(root):
            digest.update(name.encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(json.dumps(dict(build_args), sort_keys=True).encode())
    return f"sha-{digest.hexdigest()[:20]}"


def _relative(path: Path) -> str:
    # Relative to the program's working directory, so the stack's state does not depend on
    # where the repository is checked out.
    return os.path.relpath(path, Path.cwd())


class Registry(pulumi.ComponentResource):
    """One ECR repository per image: scanned on push, immutable tags, pruned, deletable."""

    def __init__(
        self,
        name: str,
        *,
        repository_names: Iterable[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:aws:Registry", name, None, opts)
        self.repositories: dict[str, aws.ecr.Repository] = {}
        for image in repository_names:
            repository = aws.ecr.Repository(
                f"{name}-{image.replace('/', '-')}",
                name=image,
                image_tag_mutability="IMMUTABLE",
                image_scanning_configuration={"scan_on_push": True},
                encryption_configurations=[{"encryption_type": "AES256"}],
                # `pulumi destroy` must be able to delete a repository that still holds images.
                force_delete=True,
                opts=pulumi.ResourceOptions(parent=self),
            )
            aws.ecr.LifecyclePolicy(
                f"{name}-{image.replace('/', '-')}",
                repository=repository.name,
                policy=LIFECYCLE_POLICY,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.repositories[image] = repository
        self.register_outputs({key: repo.repository_url for key, repo in self.repositories.items()})


class Images(pulumi.ComponentResource):
    """ECR repositories plus the TF Serving (model) and gateway images pushed by digest."""

    model_repository_url: pulumi.Output[str]
    gateway_repository_url: pulumi.Output[str]
    model_image: pulumi.Output[str]
    gateway_image: pulumi.Output[str]

    def __init__(
        self, name: str, settings: Settings, *, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("clothing:build:Images", name, None, opts)
        prefix = f"{settings.project}-{settings.stack}".lower()
        registry = Registry(
            f"{name}-registry",
            repository_names=[f"{prefix}/model", f"{prefix}/gateway"],
            opts=pulumi.ResourceOptions(parent=self),
        )
        model_repo = registry.repositories[f"{prefix}/model"]
        gateway_repo = registry.repositories[f"{prefix}/gateway"]

        model_args = {"TF_SERVING_TAG": settings.tf_serving_tag, "MODEL_NAME": settings.model_name}
        model = self._image(
            f"{name}-model",
            model_repo,
            context=MODEL_CONTEXT,
            build_args=model_args,
            tag=content_tag(
                [
                    MODEL_CONTEXT / "Dockerfile",
                    MODEL_CONTEXT / "batching_parameters.txt",
                    MODEL_CONTEXT / "monitoring.config",
                    settings.model_path,
                ],
                model_args,
            ),
            named_contexts={"model": settings.model_path},
        )
        gateway = self._image(
            f"{name}-gateway",
            gateway_repo,
            context=GATEWAY_CONTEXT,
            build_args={},
            tag=content_tag(
                [
                    GATEWAY_CONTEXT / "Dockerfile",
                    GATEWAY_CONTEXT / "requirements.txt",
                    GATEWAY_CONTEXT / "gunicorn.conf.py",
                    GATEWAY_CONTEXT / "gateway",
                ],
                {},
            ),
            named_contexts={},
        )
        self.model_repository_url = model_repo.repository_url
        self.gateway_repository_url = gateway_repo.repository_url
        self.model_image = model.ref
        self.gateway_image = gateway.ref
        self.register_outputs(
            {
                "model_repository_url": self.model_repository_url,
                "gateway_repository_url": self.gateway_repository_url,
                "model_image": self.model_image,
                "gateway_image": self.gateway_image,
            }
        )

    def _image(
        self,
        name: str,
        repository: aws.ecr.Repository,
        *,
        context: Path,
        build_args: Mapping[str, str],
        tag: str,
        named_contexts: Mapping[str, Path],
    ) -> docker_build.Image:
        token = aws.ecr.get_authorization_token_output(
            registry_id=repository.registry_id, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        return docker_build.Image(
            name,
            context={
                "location": _relative(context),
                "named": {
                    key: {"location": _relative(path)} for key, path in named_contexts.items()
                },
            },
            dockerfile={"location": _relative(context / "Dockerfile")},
            build_args=dict(build_args),
            platforms=[docker_build.Platform.LINUX_AMD64],
            push=True,
            # Previews should not need a Docker engine; `pulumi up` builds.
            build_on_preview=False,
            tags=[repository.repository_url.apply(lambda url: f"{url}:{tag}")],
            registries=[
                {
                    "address": repository.repository_url.apply(lambda url: url.split("/", 1)[0]),
                    "username": token.user_name,
                    "password": token.password,
                }
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
