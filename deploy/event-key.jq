# Prefixes each event line with a partition key and "|", for
# kafka-console-producer.sh --property parse.key=true --property key.separator='|'
#
#   jq -R -r -f deploy/event-key.jq examples/events/ecs.jsonl
#
# The key is the host the event is about (ECS host.ip or source.ip, Zeek
# id.orig_h or the receiving host of a file), so that all events of one
# host land in one partition, in order: stateful patterns (FOLLOWEDBY,
# REPEATS ... WITHIN) can only combine observations one worker sees.
# Lines that are not JSON objects keep their bytes and get the key
# "unparsed"; Sightline refuses them and sends them to the dead-letter topic.

. as $line
| ((fromjson? | objects) // {}) as $event
| ([$event.host.ip?, $event.source.ip?, $event["id.orig_h"]?, $event.rx_hosts?]
   | flatten
   | map(strings)
   | first // "unparsed") as $key
| "\($key)|\($line)"
