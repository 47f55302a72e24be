using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using SensMerging.Hub.Server.Store;

namespace SensMerging.Hub.Server.Auth;

/// <summary>What a token may do.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<HubTokenScope>))]
public enum HubTokenScope
{
    /// <summary>Read (private repositories, and everything when reads need a token).</summary>
    Read,

    /// <summary>Read and write (create repositories, upload, commit, branches).</summary>
    Write,
}

/// <summary>A token as stored: its name, scope, the SHA-256 of the token (never the token) and when it was made.</summary>
public sealed record HubTokenEntry(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("scope")] HubTokenScope Scope,
    [property: JsonPropertyName("sha256")] string Sha256,
    [property: JsonPropertyName("createdAt")] DateTimeOffset CreatedAt);

/// <summary>
/// The token file of <c>serve --tokens FILE</c>: JSON with one entry per token (name, scope, SHA-256 of the token,
/// creation time). A token is shown once when created and stored only as its hash; the file is written atomically and
/// readable by its owner only. The server reads it again whenever it changes, so a revoked token stops working at once.
/// </summary>
public sealed class HubTokenFile
{
    /// <summary>Every token starts with this: the official JavaScript client refuses tokens that do not.</summary>
    public const string Prefix = "hf_";

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { WriteIndented = true };
    private readonly Lock _gate = new();
    private (DateTime Time, long Length, IReadOnlyList<HubTokenEntry> Entries)? _cache;

    public HubTokenFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        FilePath = Path.GetFullPath(path);
    }

    /// <summary>The file (absolute).</summary>
    public string FilePath { get; }

    /// <summary>The tokens in the file (empty when the file does not exist).</summary>
    public IReadOnlyList<HubTokenEntry> List()
    {
        var info = new FileInfo(FilePath);
        if (!info.Exists)
        {
            return [];
        }

        lock (_gate)
        {
            if (_cache is { } c && c.Time == info.LastWriteTimeUtc && c.Length == info.Length)
            {
                return c.Entries;
            }

            IReadOnlyList<HubTokenEntry> entries;
            try
            {
                entries = JsonSerializer.Deserialize<TokenDocument>(File.ReadAllBytes(FilePath), Json)?.Tokens ?? [];
            }
            catch (JsonException ex)
            {
                throw new InvalidDataException($"Token file '{FilePath}' is not valid JSON: {ex.Message}", ex);
            }

            _cache = (info.LastWriteTimeUtc, info.Length, entries);
            return entries;
        }
    }

    /// <summary>Creates a token named <paramref name="name"/>; returns the token, which is stored only as its hash.</summary>
    public async Task<string> CreateAsync(string name, HubTokenScope scope, CancellationToken cancellationToken)
    {
        CheckName(name);
        var entries = List().ToList();
        if (entries.Any(e => e.Name == name))
        {
            throw new ArgumentException($"Token file '{FilePath}' already has a token named '{name}' (revoke it first, or choose another name).");
        }

        var token = Prefix + HubHashing.ToHex(RandomNumberGenerator.GetBytes(24));
        entries.Add(new HubTokenEntry(name, scope, Hash(token), DateTimeOffset.UtcNow));
        await SaveAsync(entries, cancellationToken);
        return token;
    }

    /// <summary>Removes the token named <paramref name="name"/>; false when there is none.</summary>
    public async Task<bool> RevokeAsync(string name, CancellationToken cancellationToken)
    {
        var entries = List().ToList();
        if (entries.RemoveAll(e => e.Name == name) == 0)
        {
            return false;
        }

        await SaveAsync(entries, cancellationToken);
        return true;
    }

    /// <summary>The entry of a presented token, or null when it is not (or no longer) in the file.</summary>
    public HubTokenEntry? Validate(string? token)
    {
        if (string.IsNullOrEmpty(token) || token.Length > 200)
        {
            return null;
        }

        var hash = Convert.FromHexString(Hash(token));
        HubTokenEntry? found = null;
        foreach (var entry in List())
        {
            // Compare every entry in constant time, so timing says nothing about how close a guess was.
            if (entry.Sha256.Length == 64 && CryptographicOperations.FixedTimeEquals(hash, Convert.FromHexString(entry.Sha256)))
            {
                found = entry;
            }
        }

        return found;
    }

    private static string Hash(string token) => HubHashing.ToHex(SHA256.HashData(Encoding.UTF8.GetBytes(token)));

    private static void CheckName(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > 64 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
        {
            throw new ArgumentException($"Invalid token name '{name}': use 1-64 letters, digits, '.', '_' or '-'.");
        }
    }

    private async Task SaveAsync(List<HubTokenEntry> entries, CancellationToken cancellationToken)
    {
        var folder = Path.GetDirectoryName(FilePath)!;
        Directory.CreateDirectory(folder);
        var temp = Path.Combine(folder, "." + Path.GetFileName(FilePath) + "." + Guid.NewGuid().ToString("N") + ".tmp");
        try
        {
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Options = FileOptions.Asynchronous };
            if (!OperatingSystem.IsWindows())
            {
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            }

            await using (var stream = new FileStream(temp, options))
            {
                await JsonSerializer.SerializeAsync(stream, new TokenDocument(entries), Json, cancellationToken);
                stream.Flush(flushToDisk: true);
            }

            DurableFiles.MoveIntoPlace(temp, FilePath, overwrite: true);
        }
        catch
        {
            DurableFiles.TryDelete(temp);
            throw;
        }
    }

    private sealed record TokenDocument([property: JsonPropertyName("tokens")] IReadOnlyList<HubTokenEntry> Tokens);
}
