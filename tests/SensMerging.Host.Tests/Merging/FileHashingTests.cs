using System.Security.Cryptography;
using SensMerging.Host.Merging;

namespace SensMerging.Host.Tests.Merging;

/// <summary>What the registry records of an input's files is the bytes the merge reads, also through the Hub cache's symbolic links.</summary>
public sealed class FileHashingTests : IDisposable
{
    private readonly string _root = TestPaths.NewTempDir("filefacts");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    /// <summary>A blob in the cache layout the Hub client writes: blobs/SHA256 holding the bytes.</summary>
    private (string Sha256, long Size) Blob(string repoDir, int size, int seed)
    {
        var bytes = new byte[size];
        new Random(seed).NextBytes(bytes);
        var sha = Convert.ToHexStringLower(SHA256.HashData(bytes));
        Directory.CreateDirectory(Path.Combine(repoDir, "blobs"));
        File.WriteAllBytes(Path.Combine(repoDir, "blobs", sha), bytes);
        return (sha, size);
    }

    [Fact]
    public async Task Files_of_a_cache_snapshot_are_recorded_with_their_blobs_sizes_and_hashes_not_the_links()
    {
        // models--acme--base/snapshots/COMMIT/FILE -> ../../blobs/SHA (relative links, as the Hub client and huggingface_hub make them).
        var repoDir = Path.Combine(_root, "hub", "models--acme--base");
        var snapshot = Path.Combine(repoDir, "snapshots", new string('c', 40));
        var weights = Blob(repoDir, 3000, 1);
        var tokenizer = Blob(repoDir, 1234, 2);
        Directory.CreateDirectory(Path.Combine(snapshot, "tok"));
        File.CreateSymbolicLink(Path.Combine(snapshot, "model.safetensors"), Path.Combine("..", "..", "blobs", weights.Sha256));
        File.CreateSymbolicLink(Path.Combine(snapshot, "tok", "tokenizer.json"), Path.Combine("..", "..", "..", "blobs", tokenizer.Sha256));
        File.WriteAllText(Path.Combine(snapshot, "config.json"), "{\"model_type\":\"llama\"}");
        Assert.NotEqual(weights.Size, new FileInfo(Path.Combine(snapshot, "model.safetensors")).Length); // the link's own length

        foreach (var verified in new[] { new Dictionary<string, string>(), new Dictionary<string, string> { ["model.safetensors"] = weights.Sha256 } })
        {
            var files = await FileHashing.DescribeAsync(snapshot, verified, CancellationToken.None);

            Assert.Equal(["config.json", "model.safetensors", "tok/tokenizer.json"], files.Select(f => f.Path));
            Assert.Equal((weights.Sha256, weights.Size), (files[1].Sha256, files[1].Size));
            Assert.Equal((tokenizer.Sha256, tokenizer.Size), (files[2].Sha256, files[2].Size));
            Assert.Equal(new FileInfo(Path.Combine(snapshot, "config.json")).Length, files[0].Size);
        }
    }

    [Fact]
    public async Task A_broken_link_is_an_error_naming_the_file()
    {
        var folder = Path.Combine(_root, "broken");
        Directory.CreateDirectory(folder);
        File.CreateSymbolicLink(Path.Combine(folder, "model.safetensors"), Path.Combine(_root, "nowhere", "blob"));

        var ex = await Assert.ThrowsAnyAsync<IOException>(() => FileHashing.DescribeAsync(folder, new Dictionary<string, string>(), CancellationToken.None));
        Assert.Contains("nowhere", ex.Message, StringComparison.Ordinal);
    }
}
