using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace SensMerging.Runtime.SafeTensors;

/// <summary>
/// The weights of a model folder: <c>model.safetensors</c>, or shards listed in <c>model.safetensors.index.json</c>.
/// </summary>
internal sealed class SafeTensorsCheckpoint : IDisposable
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly Dictionary<string, SafeTensorsFile> _byName;
    private readonly List<SafeTensorsFile> _files;

    private SafeTensorsCheckpoint(List<SafeTensorsFile> files, Dictionary<string, SafeTensorsFile> byName)
    {
        _files = files;
        _byName = byName;
    }

    public IReadOnlyCollection<string> Names => _byName.Keys;

    public static SafeTensorsCheckpoint Open(string modelDirectory, CancellationToken cancellationToken)
    {
        var single = Path.Combine(modelDirectory, SingleFileName);
        var index = Path.Combine(modelDirectory, IndexFileName);
        var files = new List<SafeTensorsFile>();
        var byName = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        try
        {
            if (File.Exists(single))
            {
                var file = SafeTensorsFile.Open(single);
                files.Add(file);
                foreach (var name in file.Entries.Keys)
                {
                    byName[name] = file;
                }
            }
            else if (File.Exists(index))
            {
                var shards = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
                foreach (var (name, shardName) in ReadWeightMap(index))
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    if (!shards.TryGetValue(shardName, out var shard))
                    {
                        var shardPath = Path.Combine(modelDirectory, shardName);
                        if (!File.Exists(shardPath))
                        {
                            throw new FileNotFoundException($"{index} names shard '{shardName}', which does not exist.", shardPath);
                        }
                        shard = SafeTensorsFile.Open(shardPath);
                        shards[shardName] = shard;
                        files.Add(shard);
                    }
                    if (!shard.Entries.ContainsKey(name))
                    {
                        throw new InvalidDataException($"{index} maps '{name}' to '{shardName}', which does not contain it.");
                    }
                    byName[name] = shard;
                }
            }
            else
            {
                throw new FileNotFoundException($"No weights in {modelDirectory}: expected {SingleFileName} or {IndexFileName}.", single);
            }
            return new SafeTensorsCheckpoint(files, byName);
        }
        catch
        {
            foreach (var file in files)
            {
                file.Dispose();
            }
            throw;
        }
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public long[] ShapeOf(string name) => _byName.TryGetValue(name, out var file)
        ? file.Entries[name].Shape
        : throw new KeyNotFoundException($"The checkpoint has no tensor '{name}'.");

    /// <summary>Reads a tensor (CPU, stored dtype).</summary>
    public Tensor Read(string name, CancellationToken cancellationToken) => _byName.TryGetValue(name, out var file)
        ? file.Read(name, cancellationToken)
        : throw new KeyNotFoundException($"The checkpoint has no tensor '{name}'.");

    public void Dispose()
    {
        foreach (var file in _files)
        {
            file.Dispose();
        }
    }

    private static IEnumerable<(string Name, string Shard)> ReadWeightMap(string indexPath)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(indexPath));
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{indexPath} is not valid JSON: {ex.Message}", ex);
        }
        if (root?["weight_map"] is not JsonObject map)
        {
            throw new InvalidDataException($"{indexPath} has no weight_map object.");
        }
        foreach (var (name, node) in map)
        {
            var shard = node?.GetValue<string>();
            if (string.IsNullOrEmpty(shard) || shard.Contains('/', StringComparison.Ordinal) || shard.Contains('\\', StringComparison.Ordinal) || shard.Contains("..", StringComparison.Ordinal))
            {
                throw new InvalidDataException($"{indexPath}: weight_map entry '{name}' names an invalid shard file '{shard}'.");
            }
            yield return (name, shard);
        }
    }
}
