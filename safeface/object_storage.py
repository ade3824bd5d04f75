"""Private media on S3-compatible object storage (AWS S3, MinIO, Ceph ...), used as the default
storage when SAFEFACE_S3_BUCKET is set (see settings).

django-storages' S3Storage does the reading and writing; this subclass keeps the bucket private
to the site and adds what the private-media helpers need beyond Django's Storage API:

- ``url()`` never names the bucket: like the local storage it gives a path no route serves, so a
  file can only leave through a view that checked ownership;
- ``presigned_download_url()`` signs a short-lived GET (for PRIVATE_MEDIA_SERVER=s3), optionally
  for the public name of an internal endpoint;
- ``open_stream()`` streams an object or a byte range of it without a local copy;
- ``download_to()`` copies an object into an open file (workers need local paths);
- ``delete_prefix()`` removes every object under a prefix in batches (account deletion, orphans).
"""
from __future__ import annotations

from typing import IO, Any

from botocore.exceptions import ClientError
from django.conf import settings
from django.utils.encoding import filepath_to_uri
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

_DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes


def _missing(error: ClientError) -> bool:
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or code in ("404", "NoSuchKey", "NotFound")


class PrivateS3Storage(S3Storage):
    """A private bucket: objects carry no ACL of their own and no public URL."""

    def get_default_settings(self) -> dict[str, Any]:
        return {**super().get_default_settings(), "public_endpoint_url": None}

    def key(self, name: str) -> str:
        """The object key of a stored file name."""
        return self._normalize_name(clean_name(name))

    @property
    def client(self):
        return self.connection.meta.client

    def url(self, name, parameters=None, expire=None, http_method=None) -> str:
        # Never a bucket URL: downloads go through private_media.private_file_response.
        return settings.MEDIA_URL + filepath_to_uri(clean_name(name)).lstrip("/")

    def _public_client(self):
        public = self.public_endpoint_url
        if not public or public.rstrip("/") == (self.endpoint_url or "").rstrip("/"):
            return self.client
        client = getattr(self._connections, "public_client", None)
        if client is None:
            # Signing needs no request, so this client never has to reach the public name.
            client = self._create_session().client(
                "s3",
                region_name=self.region_name,
                use_ssl=self.use_ssl,
                endpoint_url=public,
                config=self.client_config,
                verify=self.verify,
            )
            self._connections.public_client = client
        return client

    def presigned_download_url(
        self, name: str, *, content_disposition: str, content_type: str, seconds: int
    ) -> str:
        """A GET URL for one object, valid ``seconds``; the bucket answers with these headers."""
        return self._public_client().generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket_name,
                "Key": self.key(name),
                "ResponseContentDisposition": content_disposition,
                "ResponseContentType": content_type,
                "ResponseCacheControl": "private, no-store",
            },
            ExpiresIn=seconds,
        )

    def open_stream(self, name: str, start: int | None = None, end: int | None = None):
        """The object's body (bytes ``start``..``end`` inclusive when given) as botocore's
        StreamingBody; the caller closes it. FileNotFoundError when the object is gone."""
        params = {"Bucket": self.bucket_name, "Key": self.key(name)}
        if start is not None:
            params["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            return self.client.get_object(**params)["Body"]
        except ClientError as error:
            if _missing(error):
                raise FileNotFoundError(f"File does not exist: {name}") from error
            raise

    def download_to(self, name: str, handle: IO[bytes]) -> None:
        """Copies the object into an open binary file (multipart, in parallel for large ones)."""
        try:
            self.client.download_fileobj(self.bucket_name, self.key(name), handle, Config=self.transfer_config)
        except ClientError as error:
            if _missing(error):
                raise FileNotFoundError(f"File does not exist: {name}") from error
            raise

    def delete_prefix(self, prefix: str) -> int:
        """Deletes every object whose key starts with ``prefix``; returns how many."""
        key_prefix = self.key(prefix)
        if prefix.endswith("/") and not key_prefix.endswith("/"):
            key_prefix += "/"
        if not key_prefix.strip("/"):
            raise ValueError("Refusing to delete the whole bucket: give a non-empty prefix.")
        removed = 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket_name, Prefix=key_prefix):
            keys = [{"Key": entry["Key"]} for entry in page.get("Contents", ())]
            for start in range(0, len(keys), _DELETE_BATCH):
                batch = keys[start:start + _DELETE_BATCH]
                answer = self.client.delete_objects(Bucket=self.bucket_name, Delete={"Objects": batch, "Quiet": True})
                errors = answer.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise OSError(
                        f"The bucket refused to delete {len(errors)} object(s) under {key_prefix!r}, "
                        f"e.g. {first.get('Key')}: {first.get('Code')} {first.get('Message', '')}".rstrip()
                    )
                removed += len(batch)
        return removed
