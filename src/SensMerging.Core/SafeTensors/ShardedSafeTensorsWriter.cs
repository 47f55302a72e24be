using System.Globalization;
using System.Text.Json;

namespace SensMerging.Core.SafeTensors;

/// <summary>One output file of a sharded write: its file name and the tensors it holds, in order.</summary>
public sealed record ShardPlan(string FileName, IReadOnlyList<TensorPlanEntry> Tensors)
{
    /// <summary>Bytes of tensor data in the shard.</summary>
    public long DataBytes => Tensors.Sum(t => t.ByteLength);
}

/// <summary>
/// Writes a model's weights as <c>model.safetensors</c> when they fit in one shard, else as
/// <c>model-0000k-of-0000n.safetensors</c> files plus <c>model.safetensors.index.json</c>. Tensors are streamed in
/// plan order (<see cref="WriteChunk"/>), or their pieces written in any order at their place (<see cref="WriteAt"/>);
/// each shard file is opened when its first byte arrives and closed when its last byte is written.
/// </summary>
public sealed class ShardedSafeTensorsWriter : IDisposable
{
    /// <summary>The single-file weights name.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>The sharded index name.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly string _folder;
    private readonly IReadOnlyDictionary<string, string> _metadata;
    private readonly bool _computeSha256;
    private readonly Dictionary<string, int> _shardOf;
    private readonly List<WrittenFile> _written = [];
    private readonly Dictionary<int, SafeTensorsWriter> _openAt = [];
    private readonly Dictionary<int, WrittenFile> _closedAt = [];
    private SafeTensorsWriter? _open;
    private int _openIndex = -1;
    private bool _completed;

    /// <param name="folder">An existing folder to write into.</param>
    /// <param name="plan">Every tensor in output order.</param>
    /// <param name="maxShardBytes">Most tensor bytes per shard (a single tensor larger than this gets a shard of its own).</param>
    /// <param name="metadata"><c>__metadata__</c> of every shard; <c>format: pt</c> is added when absent (transformers requires it).</param>
    /// <param name="computeSha256">Hash files while writing.</param>
    public ShardedSafeTensorsWriter(string folder, IReadOnlyList<TensorPlanEntry> plan, long maxShardBytes, IReadOnlyDictionary<string, string>? metadata = null, bool computeSha256 = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        ArgumentNullException.ThrowIfNull(plan);
        _folder = folder;
        var meta = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>(), StringComparer.Ordinal);
        meta.TryAdd("format", "pt");
        _metadata = meta;
        _computeSha256 = computeSha256;
        Shards = PlanShards(plan, maxShardBytes);
        _shardOf = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < Shards.Count; i++)
        {
            foreach (var t in Shards[i].Tensors)
            {
                _shardOf.Add(t.Name, i);
            }
        }
        TotalTensorBytes = plan.Sum(t => t.ByteLength);
    }

    /// <summary>Stopwatch ticks spent hashing in the files written so far (see <see cref="SafeTensorsWriter.HashTicks"/>).</summary>
    public long HashTicks { get; private set; }

    /// <summary>Bytes read back to be hashed in the files written so far (see <see cref="SafeTensorsWriter.ReadBackBytes"/>).</summary>
    public long ReadBackBytes { get; private set; }

    /// <summary>The planned files.</summary>
    public IReadOnlyList<ShardPlan> Shards { get; }

    /// <summary>Sum of the tensors' bytes (the index's <c>total_size</c>).</summary>
    public long TotalTensorBytes { get; }

    /// <summary>Splits a plan into shards of at most <paramref name="maxShardBytes"/> tensor bytes, keeping order.</summary>
    public static IReadOnlyList<ShardPlan> PlanShards(IReadOnlyList<TensorPlanEntry> plan, long maxShardBytes)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxShardBytes, 1);
        var groups = new List<List<TensorPlanEntry>>();
        var current = new List<TensorPlanEntry>();
        long size = 0;
        foreach (var t in plan)
        {
            if (current.Count > 0 && size + t.ByteLength > maxShardBytes)
            {
                groups.Add(current);
                current = [];
                size = 0;
            }
            current.Add(t);
            size += t.ByteLength;
        }
        groups.Add(current);
        if (groups.Count == 1)
        {
            return [new ShardPlan(SingleFileName, groups[0])];
        }
        return [.. groups.Select((g, i) => new ShardPlan(ShardFileName(i + 1, groups.Count), g))];
    }

    /// <summary><c>model-00001-of-00003.safetensors</c>.</summary>
    public static string ShardFileName(int index, int count) =>
        string.Create(CultureInfo.InvariantCulture, $"model-{index:D5}-of-{count:D5}.safetensors");

    /// <summary>Writes a whole tensor.</summary>
    public void WriteTensor(string name, ReadOnlySpan<byte> bytes) => Writer(name).WriteTensor(name, bytes);

    /// <summary>Writes the next piece of a tensor (see <see cref="SafeTensorsWriter.WriteChunk"/>).</summary>
    public void WriteChunk(string name, long offsetInTensor, ReadOnlySpan<byte> bytes) =>
        Writer(name).WriteChunk(name, offsetInTensor, bytes);

    /// <summary>
    /// Writes a piece of tensor <paramref name="name"/> at its place, in any order (see <see cref="SafeTensorsWriter.WriteAt"/>);
    /// a shard is closed (flushed, hashed) as soon as all its bytes are written. Cannot be mixed with <see cref="WriteChunk"/>.
    /// </summary>
    public void WriteAt(string name, long offsetInTensor, ReadOnlySpan<byte> bytes)
    {
        if (!_shardOf.TryGetValue(name, out var shard))
        {
            throw new InvalidOperationException($"tensor '{name}' is not in the output plan");
        }
        if (_openIndex >= 0)
        {
            throw new InvalidOperationException($"tensor '{name}': pieces were already streamed in order (WriteChunk); WriteAt cannot follow them");
        }
        if (bytes.IsEmpty && _closedAt.ContainsKey(shard))
        {
            return;
        }
        if (_closedAt.ContainsKey(shard))
        {
            throw new InvalidOperationException($"tensor '{name}' belongs to shard {shard + 1}, which is already complete");
        }
        var writer = PositionedShard(shard);
        writer.WriteAt(name, offsetInTensor, bytes);
        if (writer.IsComplete)
        {
            ClosePositionedShard(shard);
        }
    }

    /// <summary>
    /// True when a <see cref="WriteAt"/> piece of <paramref name="name"/> at <paramref name="offsetInTensor"/> would start at
    /// its shard's hash frontier (hashed straight from the span instead of read back later).
    /// </summary>
    public bool IsAtFrontier(string name, long offsetInTensor)
    {
        if (!_shardOf.TryGetValue(name, out var shard) || _closedAt.ContainsKey(shard) || _openIndex >= 0)
        {
            return false;
        }
        return PositionedShard(shard).IsAtFrontier(name, offsetInTensor);
    }

    /// <summary>Closes the last shard, writes the index when sharded, and returns every file written.</summary>
    public IReadOnlyList<WrittenFile> Complete()
    {
        if (_completed)
        {
            return _written;
        }
        if (_openAt.Count > 0 || _closedAt.Count > 0)
        {
            // Positioned mode: every shard must be complete (shards of only empty tensors are created now).
            for (var i = 0; i < Shards.Count; i++)
            {
                if (!_closedAt.ContainsKey(i))
                {
                    ClosePositionedShard(i);
                }
                _written.Add(_closedAt[i]);
            }
            if (Shards.Count > 1)
            {
                _written.Add(WriteIndex());
            }
            _completed = true;
            return _written;
        }
        while (_openIndex < Shards.Count - 1 || _open is not null)
        {
            // Shards holding only empty tensors (or not yet opened) are still created so the index is consistent.
            if (_open is null)
            {
                OpenShard(_openIndex + 1);
            }
            CloseOpenShard();
        }
        if (Shards.Count > 1)
        {
            _written.Add(WriteIndex());
        }
        _completed = true;
        return _written;
    }

    public void Dispose()
    {
        _open?.Dispose();
        foreach (var writer in _openAt.Values)
        {
            writer.Dispose();
        }
        _openAt.Clear();
    }

    private SafeTensorsWriter PositionedShard(int index)
    {
        if (!_openAt.TryGetValue(index, out var writer))
        {
            writer = new SafeTensorsWriter(Path.Combine(_folder, Shards[index].FileName), Shards[index].Tensors, _metadata, _computeSha256);
            _openAt[index] = writer;
        }
        return writer;
    }

    /// <summary>Completes a positioned shard (opening it first if none of its bytes were written: only empty tensors).</summary>
    private void ClosePositionedShard(int index)
    {
        var writer = PositionedShard(index);
        Account(writer);
        _closedAt[index] = writer.Complete();
        writer.Dispose();
        _openAt.Remove(index);
    }

    private SafeTensorsWriter Writer(string name)
    {
        if (!_shardOf.TryGetValue(name, out var shard))
        {
            throw new InvalidOperationException($"tensor '{name}' is not in the output plan");
        }
        if (_openAt.Count > 0 || _closedAt.Count > 0)
        {
            throw new InvalidOperationException($"tensor '{name}': pieces were already written at their offsets (WriteAt); WriteChunk cannot follow them");
        }
        if (shard == _openIndex && _open is not null)
        {
            return _open;
        }
        if (shard < _openIndex)
        {
            throw new InvalidOperationException($"tensor '{name}' belongs to shard {shard + 1}, which is already closed");
        }
        while (_openIndex < shard)
        {
            if (_open is not null)
            {
                CloseOpenShard();
            }
            OpenShard(_openIndex + 1);
            if (_openIndex < shard)
            {
                CloseOpenShard();
            }
        }
        return _open!;
    }

    private void OpenShard(int index)
    {
        _openIndex = index;
        _open = new SafeTensorsWriter(Path.Combine(_folder, Shards[index].FileName), Shards[index].Tensors, _metadata, _computeSha256);
    }

    private void Account(SafeTensorsWriter writer)
    {
        HashTicks += writer.HashTicks;
        ReadBackBytes += writer.ReadBackBytes;
    }

    private void CloseOpenShard()
    {
        Account(_open!);
        _written.Add(_open!.Complete());
        _open.Dispose();
        _open = null;
    }

    private WrittenFile WriteIndex()
    {
        var path = Path.Combine(_folder, IndexFileName);
        using var stream = new MemoryStream();
        using (var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartObject("metadata");
            json.WriteNumber("total_size", TotalTensorBytes);
            json.WriteEndObject();
            json.WriteStartObject("weight_map");
            foreach (var (name, shard) in _shardOf.OrderBy(p => p.Key, StringComparer.Ordinal))
            {
                json.WriteString(name, Shards[shard].FileName);
            }
            json.WriteEndObject();
            json.WriteEndObject();
        }
        stream.WriteByte((byte)'\n');
        var bytes = stream.ToArray();
        File.WriteAllBytes(path, bytes);
        return new WrittenFile(Path.GetFullPath(path), bytes.Length, _computeSha256 ? Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes)) : string.Empty);
    }
}
