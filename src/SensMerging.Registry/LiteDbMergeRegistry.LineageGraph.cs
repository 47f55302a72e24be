using LiteDB;
using SensMerging.Registry.Storage;

namespace SensMerging.Registry;

/// <summary>The bounded lineage queries: producers only, and a merge's lineage graph.</summary>
public sealed partial class LiteDbMergeRegistry
{
    /// <summary>The most summaries one lineage-graph lookup reads for one model key (a model used by thousands of merges).</summary>
    private const int LineageScanLimit = 256;

    public Task<IReadOnlyList<MergeSummary>> ProducersAsync(string modelRef, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(modelRef);
        cancellationToken.ThrowIfCancellationRequested();
        IReadOnlyList<MergeSummary> producers = [.. FindSummaries("outputKeys", ModelKeys.ForQuery(modelRef))
            .OrderByDescending(s => s.CreatedAt).ThenByDescending(s => s.Id, StringComparer.Ordinal)];
        return Task.FromResult(producers);
    }

    public Task<LineageGraph?> LineageGraphAsync(string id, LineageBounds bounds, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(id);
        ArgumentNullException.ThrowIfNull(bounds);
        bounds.Validate();
        cancellationToken.ThrowIfCancellationRequested();
        // One lock for the whole walk, and one read transaction: in shared mode LiteDB opens the file for every query
        // outside a transaction (a cold page cache each time), and the walk makes one query per model key.
        return Task.FromResult(Locked("read a merge's lineage", () =>
        {
            var inTransaction = _reader.BeginTrans();
            try
            {
                var summaries = _reader.GetCollection(Migrations.SummaryCollection);
                var rootDoc = summaries.FindById(id.Trim());
                if (rootDoc is null)
                {
                    return null;
                }
                var walk = new LineageWalk(summaries, rootDoc, bounds, cancellationToken);
                walk.Expand(ancestors: true);
                walk.Expand(ancestors: false);
                return walk.ToGraph();
            }
            finally
            {
                if (inTransaction)
                {
                    _reader.Rollback();
                }
            }
        }));
    }

    /// <summary>One breadth-first walk over the summaries' indexed model keys, each way from the root.</summary>
    private sealed class LineageWalk
    {
        private readonly ILiteCollection<BsonDocument> _summaries;
        private readonly LineageBounds _bounds;
        private readonly CancellationToken _ct;
        private readonly Dictionary<string, (BsonDocument Doc, int Generation)> _nodes = new(StringComparer.Ordinal);
        private readonly List<string> _order = [];
        private readonly List<LineageGraphEdge> _edges = [];
        private readonly HashSet<(string From, string To)> _edgeSet = [];
        private readonly List<LineageGraphCut> _cuts = [];

        public LineageWalk(ILiteCollection<BsonDocument> summaries, BsonDocument root, LineageBounds bounds, CancellationToken ct)
        {
            _summaries = summaries;
            _bounds = bounds;
            _ct = ct;
            Add(root, 0);
        }

        public void Expand(bool ancestors)
        {
            var sign = ancestors ? -1 : 1;
            List<BsonDocument> frontier = [_nodes[_order[0]].Doc];
            for (var step = 1; step <= _bounds.Depth + 1 && frontier.Count > 0; step++)
            {
                _ct.ThrowIfCancellationRequested();
                var found = new Dictionary<string, BsonDocument>(StringComparer.Ordinal);
                var links = new List<(BsonDocument Producer, BsonDocument Consumer)>();
                var atLeast = false;
                foreach (var node in frontier)
                {
                    var nodeId = node["_id"].AsString;
                    // Ancestors: merges whose output is one of this merge's inputs; descendants: merges that took its output.
                    var keys = Strings(node, ancestors ? "inputKeys" : "outputKeys").Where(k => !k.StartsWith("name:", StringComparison.Ordinal));
                    foreach (var key in keys)
                    {
                        var hits = _summaries.Find(BsonExpression.Create($"$.{(ancestors ? "outputKeys" : "inputKeys")}[*] ANY = @0", new BsonValue(key)), limit: LineageScanLimit).ToList();
                        atLeast |= hits.Count >= LineageScanLimit;
                        foreach (var hit in hits)
                        {
                            var hitId = hit["_id"].AsString;
                            if (string.Equals(hitId, nodeId, StringComparison.Ordinal))
                            {
                                continue;
                            }
                            found.TryAdd(hitId, hit);
                            links.Add(ancestors ? (hit, node) : (node, hit));
                        }
                    }
                }
                var fresh = found.Values.Where(d => !_nodes.ContainsKey(d["_id"].AsString)).OrderByDescending(d => d["createdTicks"].AsInt64)
                    .ThenByDescending(d => d["_id"].AsString, StringComparer.Ordinal).ToList();
                var generation = sign * step;
                // Past the depth bound only counted; within it, the newest Width merges kept and the rest counted.
                var kept = step > _bounds.Depth ? [] : fresh.Take(_bounds.Width).ToList();
                if (fresh.Count > kept.Count)
                {
                    _cuts.Add(new LineageGraphCut(generation, fresh.Count - kept.Count, atLeast));
                }
                foreach (var doc in kept)
                {
                    Add(doc, generation);
                }
                // Edges to the merges kept, and to merges already in the graph (a model that two of them share).
                foreach (var (producer, consumer) in links)
                {
                    Link(producer, consumer);
                }
                frontier = kept;
            }
        }

        public LineageGraph ToGraph()
        {
            var nodes = _order.Select(id => new LineageGraphNode(RecordDocuments.ReadSummary(_nodes[id].Doc), _nodes[id].Generation))
                .OrderBy(n => Math.Sign(n.Generation) switch { 0 => 0, < 0 => 1, _ => 2 }).ThenBy(n => Math.Abs(n.Generation)).ThenByDescending(n => n.Merge.CreatedAt)
                .ThenByDescending(n => n.Merge.Id, StringComparer.Ordinal).ToList();
            return new LineageGraph(nodes[0].Merge, nodes, _edges, [.. _cuts.OrderBy(c => c.Generation)]);
        }

        private void Add(BsonDocument doc, int generation)
        {
            var id = doc["_id"].AsString;
            _nodes[id] = (doc, generation);
            _order.Add(id);
        }

        private void Link(BsonDocument producer, BsonDocument consumer)
        {
            var from = producer["_id"].AsString;
            var to = consumer["_id"].AsString;
            if (!_nodes.ContainsKey(from) || !_nodes.ContainsKey(to) || !_edgeSet.Add((from, to)))
            {
                return;
            }
            // The consumer's input that names the producer's output by itself (folder or repo id), when one does.
            var outputs = Strings(producer, "outputKeys").ToHashSet(StringComparer.Ordinal);
            var input = Strings(consumer, "inputs").FirstOrDefault(r => ModelKeys.ForReference(r).Any(outputs.Contains));
            _edges.Add(new LineageGraphEdge(from, to, input));
        }

        private static IEnumerable<string> Strings(BsonDocument doc, string field) =>
            doc.TryGetValue(field, out var v) && v.IsArray ? v.AsArray.Where(x => x.IsString).Select(x => x.AsString) : [];
    }
}
