# schoolproxy logon feed — run at user logoff (GPO: ... Scripts (Logon/Logoff) > Logoff). Clears this
# PC's address on the gateway, so the next person is not browsing under this user's name.
param(
    [string]$Gateway = "http://10.0.0.1:9465",
    [string]$SecretFile = "\\school.local\NETLOGON\schoolproxy\feed-secret.txt"
)
$ErrorActionPreference = "Stop"
try {
    $secret = (Get-Content -Raw -LiteralPath $SecretFile).Trim()
    $body = @{ user = $env:USERNAME } | ConvertTo-Json -Compress
    Invoke-RestMethod -Method Post -Uri "$Gateway/logoff" -Body $body -ContentType "application/json" `
        -Headers @{ Authorization = "Bearer $secret" } -TimeoutSec 5 | Out-Null
} catch {
    Write-EventLog -LogName Application -Source "Application" -EventId 9466 -EntryType Warning `
        -Message "schoolproxy logoff feed failed: $($_.Exception.Message)" -ErrorAction SilentlyContinue
}
