"""ECR repositories and the two images built and pushed into them."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build
from docker.utils.build import PatternMatcher

from clothing_infra.settings import REPO_ROOT

MODEL_CONTEXT = REPO_ROOT / "services" / "model"
GATEWAY_CONTEXT = REPO_ROOT / "services" / "gateway"
PLATFORM = "linux/amd64"
# services/model/Dockerfile's stage for the canary version: empty unless this named context
# replaces it.
EMPTY_CONTEXT = MODEL_CONTEXT / "no-canary"

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


def _ignore_patterns(context: Path) -> list[str]:
    """The context's .dockerignore patterns (docker-build reads the same file)."""
    ignore = context / ".dockerignore"
    if not ignore.is_file():
        return []
    lines = (line.strip() for line in ignore.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _context_files(root: Path, patterns: list[str]) -> list[str]:
    """Files of a build context that Docker sends, by .dockerignore's rules, sorted."""
    matcher = PatternMatcher(patterns)
    return sorted(
        relative
        for relative in matcher.walk(str(root))
        if (root / relative).is_file() or (root / relative).is_symlink()
    )


def _hash_file(digest: Any, name: str, path: Path) -> None:
    digest.update(name.encode() + b"\0")
    digest.update(stat.filemode(path.stat().st_mode).encode() + b"\0")
    digest.update(hashlib.sha256(path.read_bytes()).digest())


def content_tag(
    context: Path,
    build_args: Mapping[str, str],
    named_contexts: Mapping[str, Path] | None = None,
) -> str:
    """A tag that changes whenever docker-build's context hash does (and on build arguments).

    pulumi-docker-build rebuilds when its hash changes: the Dockerfile's bytes, then each
    context file that .dockerignore keeps, with its path and mode, then the named contexts
    (provider/internal/context.go, hashBuildContext). A rebuild under an unchanged tag is
    refused by an immutable ECR repository, so this tag covers all of that: the same
    .dockerignore rules (docker-py's PatternMatcher, Docker's semantics) and the modes, and
    every file of a named context.
    """
    digest = hashlib.sha256()
    digest.update((context / "Dockerfile").read_bytes())
    for relative in _context_files(context, _ignore_patterns(context)):
        _hash_file(digest, f"context/{relative}", context / relative)
    for key, root in sorted((named_contexts or {}).items()):
        for relative in _context_files(root, []):
            _hash_file(digest, f"{key}/{relative}", root / relative)
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


@dataclass(frozen=True)
class ImagesArgs:
    """What the two images are built from."""

    repository_prefix: str
    tf_serving_tag: str
    model_name: str
    model_path: Path
    # ModelServerConfig text proto written into the model image.
    model_config: str
    canary_model_path: Path | None = None


class Images(pulumi.ComponentResource):
    """ECR repositories plus the TF Serving (model) and gateway images pushed by digest."""

    model_repository_url: pulumi.Output[str]
    gateway_repository_url: pulumi.Output[str]
    model_image: pulumi.Output[str]
    gateway_image: pulumi.Output[str]

    def __init__(
        self, name: str, args: ImagesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("clothing:build:Images", name, None, opts)
        prefix = args.repository_prefix
        registry = Registry(
            f"{name}-registry",
            repository_names=[f"{prefix}/model", f"{prefix}/gateway"],
            opts=pulumi.ResourceOptions(parent=self),
        )
        model_repo = registry.repositories[f"{prefix}/model"]
        gateway_repo = registry.repositories[f"{prefix}/gateway"]

        model_args = {
            "TF_SERVING_TAG": args.tf_serving_tag,
            "MODEL_NAME": args.model_name,
            "MODEL_CONFIG": args.model_config,
        }
        # The stable versions, and the canary's (or an empty folder).
        model_contexts = {
            "model": args.model_path,
            "canary": args.canary_model_path or EMPTY_CONTEXT,
        }
        model = self._image(
            f"{name}-model",
            model_repo,
            context=MODEL_CONTEXT,
            build_args=model_args,
            tag=content_tag(MODEL_CONTEXT, model_args, model_contexts),
            named_contexts=model_contexts,
        )
        gateway = self._image(
            f"{name}-gateway",
            gateway_repo,
            context=GATEWAY_CONTEXT,
            build_args={},
            tag=content_tag(GATEWAY_CONTEXT, {}),
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
