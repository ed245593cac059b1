# `make help`: the targets with a `## description`, under their `##@ Area` headers, in the order
# the makefiles read them (an `include` is followed where it stands, so areas keep their place).
function scan(file,    line, parts, n, i, target, text) {
  while ((getline line < file) > 0) {
    if (line ~ /^-?include /) {
      n = split(line, parts, /[ \t]+/)
      for (i = 2; i <= n; i++) scan(parts[i])
    } else if (line ~ /^##@ /) {
      printf "\n%s%s%s\n", bold, substr(line, 5), reset
    } else if (line ~ /^[a-zA-Z0-9_-]+:.*## /) {
      target = line; sub(/:.*/, "", target)
      text = line; sub(/^[^#]*## /, "", text)
      printf "  %s%-20s%s %s\n", cyan, target, reset, text
    }
  }
  close(file)
}
BEGIN {
  colour = (ENVIRON["NO_COLOR"] == "")
  bold = colour ? "\033[1m" : ""; cyan = colour ? "\033[36m" : ""; reset = colour ? "\033[0m" : ""
  printf "Usage: make TARGET [VAR=value ...]   (start with: make run, make test)\n"
  scan(ARGV[1])
  exit
}
