# Sourced by the image builders: `image_metadata WORK DESCRIPTION OS RELEASE DATE [PROPERTY_LINES]`
# writes WORK/metadata.yaml and WORK/templates/ of an Incus unified image whose /etc/hostname and
# /etc/hosts are made from the instance's name when it is created or copied.
image_metadata() {
  local work=$1 description=$2 os=$3 release=$4 date=$5 extra=${6:-}
  mkdir -p "$work/templates"
  echo '{{ container.name }}' > "$work/templates/hostname.tpl"
  printf '127.0.0.1 localhost\n127.0.1.1 {{ container.name }}\n::1 localhost\n' > "$work/templates/hosts.tpl"
  {
    printf 'architecture: x86_64\ncreation_date: %s\nproperties:\n  architecture: x86_64\n' "$date"
    printf '  description: %s\n  os: %s\n  release: "%s"\n' "$description" "$os" "$release"
    [ -z "$extra" ] || printf '%s\n' "$extra"
    printf 'templates:\n'
    for file in hostname hosts; do
      printf '  /etc/%s:\n    when:\n    - create\n    - copy\n    template: %s.tpl\n' "$file" "$file"
    done
  } > "$work/metadata.yaml"
}
