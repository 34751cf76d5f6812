#!/bin/bash
# B2's bare baseline: the same buildah builds in parallel (& + wait), the same export, the
# same publish (multiarch.publish via bench.bare_publish), and the same scratch cleanup.
# usage: bare_build.sh WORK CONTEXT BASE LOOPS IMAGE PYTHON PLATFORM...
set -euo pipefail
work=$1 context=$2 base=$3 loops=$4 image=$5 python=$6
shift 6
pids=()
layouts=()
for platform in "$@"; do
    slug=${platform//\//-}
    store=$work/builds/$slug
    layout=$work/shared/$slug
    layouts+=("$platform=$layout")
    (
        mkdir -p "$store" "$work/shared"
        flags=(--root "$store/root" --runroot "$store/runroot" --storage-driver overlay)
        BUILDAH_ISOLATION=chroot buildah "${flags[@]}" build --isolation chroot \
            --platform "$platform" --tls-verify=false --build-arg "BASE=$base" \
            --build-arg "LOOPS=$loops" --tag "localhost/bare/$slug" "$context" >/dev/null
        skopeo copy --quiet --dest-compress --dest-compress-format gzip \
            "containers-storage:[overlay@$store/root+$store/runroot]localhost/bare/$slug" \
            "oci:$layout:image"
    ) &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
"$python" -m bench.bare_publish --image "$image" --index "$work/shared/index" "${layouts[@]}"
# what the flow's local runner does after a build: unmount container storage, delete it
findmnt -rn -o TARGET | grep "^$work/builds/" | sort -r | xargs -r umount --lazy
rm -rf "$work/builds" "$work/shared"
